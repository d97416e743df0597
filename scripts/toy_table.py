"""Train every network type and optimizer on the toy character and print the README's comparison table.

    python scripts/toy_table.py                      # every row, one after the other (about an hour on 2 cores)
    python scripts/toy_table.py --rows lora,prodigy  # some rows
    python scripts/toy_table.py --list               # the rows and their commands

Each row is one ordinary `python -m train +experiment=char_lora …` run (the command is printed beside its
numbers, so anyone can rerun one), in `<out>/<row>/`. The table gives the concept score at weight 1,
the fidelity the base world lost (base fidelity at weight 0 minus at weight 1), the training time the run
reports (without the evaluation render), and the size of the file it wrote. Rows run one at a time, or
`--jobs N` at once with the cores shared evenly; times compare only between rows run the same way on an
otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ADAPTIVE = ["optimizer.lr=1", "optimizer.unet_lr=null", "optimizer.text_encoder_lr=null"]

# Row name → (what it shows, overrides on top of +experiment=char_lora)
ROWS: dict[str, tuple[str, list[str]]] = {
    "lora": (
        "LoRA (attention layers only), AdamW",
        ["network=lora", "network.conv_dim=0", "network.conv_alpha=null"],
    ),
    "locon": ("LoCon (char_lora as shipped), AdamW", []),
    "loha": ("LoHa with 3x3 convs, AdamW", ["network=loha"]),
    "lokr": ("LoKr with 3x3 convs, AdamW", ["network=lokr"]),
    "dora": ("DoRA with 3x3 convs, AdamW", ["network=dora"]),
    "full": ("full fine-tune (DreamBooth)", ["+experiment=char_dreambooth"]),
    "embedding": (
        "textual inversion (8 vectors from `star`)",
        [
            "network=embedding",
            "name=sls",
            "network.init_word=star",
            "network.num_vectors_per_token=8",
            "optimizer.text_encoder_lr=5e-3",
        ],  # fmt: skip
    ),
    "adamw8bit": ("LoCon, AdamW8bit", ["optimizer=adamw8bit"]),
    "lion": (
        "LoCon, Lion",
        ["optimizer=lion", "optimizer.lr=2e-4", "optimizer.unet_lr=2e-4", "optimizer.text_encoder_lr=1e-4"],
    ),
    "adafactor": ("LoCon, Adafactor", ["optimizer=adafactor"]),
    "prodigy": ("LoCon, Prodigy, lr = 1", ["optimizer=prodigy", *ADAPTIVE]),
    "dadapt_adam": ("LoCon, DAdaptAdam, lr = 1", ["optimizer=dadapt_adam", *ADAPTIVE]),
    "schedulefree": ("LoCon, schedule-free AdamW", ["optimizer=adamw_schedulefree", "scheduler=constant"]),
}


def command(row: str, out: Path) -> list[str]:
    """The row's `python -m train` command (experiments given as a row's own +experiment replace char_lora)."""
    overrides = ROWS[row][1]
    experiment = next((o for o in overrides if o.startswith("+experiment=")), "+experiment=char_lora")
    rest = [o for o in overrides if not o.startswith("+experiment=")]
    return [sys.executable, "-m", "train", experiment, *rest, "logger=none", f"hydra.run.dir={out / row}"]


def shown(argv: list[str]) -> str:
    """The command as a user types it (without the output folder)."""
    return "python -m train " + " ".join(a for a in argv[3:] if not a.startswith("hydra.run.dir="))


def measure(row: str, out: Path, threads: int | None = None) -> dict:
    """Run one row (with `threads` CPU threads); its scores, training seconds and file size (or the error)."""
    argv = command(row, out)
    env = os.environ | ({"OMP_NUM_THREADS": str(threads)} if threads else {})
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, env=env)
    result = {"row": row, "what": ROWS[row][0], "command": shown(argv)}
    if done.returncode != 0:
        errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
        return result | {"error": (errors or done.stderr.strip().splitlines()[-1:] or ["failed"])[-1]}
    trained = re.search(r"Trained (\d+) steps in ([\d.]+) s", done.stdout)
    written = re.search(r"^\s+(?:LoRA|embedding):\s+(\S+)", done.stdout, re.MULTILINE)
    scores = json.loads((out / row / "scores.json").read_text())["weight"]
    path = Path(written.group(1)) if written else None
    return result | {
        "concept": scores["1.0"]["concept_score"],
        "fidelity_lost": scores["0.0"]["base_fidelity"] - scores["1.0"]["base_fidelity"],
        "steps": int(trained.group(1)) if trained else None,
        "seconds": float(trained.group(2)) if trained else None,
        "bytes": path.stat().st_size if path and path.is_file() else None,
    }


def table(results: list[dict]) -> str:
    lines = [
        "| run | concept at weight 1 | fidelity lost | training time | file | command |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['what']} | — | — | — | — | `{r['command']}` ({r['error']}) |")
            continue
        size = f"{r['bytes'] / 2**20:.2f} MiB" if r["bytes"] else "—"
        lines.append(
            f"| {r['what']} | {r['concept']:.3f} | {r['fidelity_lost']:.3f} | {r['seconds']:.0f} s | {size} "
            f"| `{r['command']}` |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", default=",".join(ROWS), help="comma-separated rows (default: all)")
    parser.add_argument(
        "--out", type=Path, default=REPO / "outputs" / "toy_table", help="run folders go here"
    )
    parser.add_argument("--list", action="store_true", help="print the rows and their commands, run nothing")
    parser.add_argument(
        "--jobs", type=int, default=1, help="rows trained at once, sharing the CPU cores evenly (default 1)"
    )
    args = parser.parse_args()
    rows = [row.strip() for row in args.rows.split(",") if row.strip()]
    unknown = [row for row in rows if row not in ROWS]
    if unknown:
        parser.error(f"unknown rows {', '.join(unknown)}; choose from {', '.join(ROWS)}")
    if args.list:
        for row in rows:
            print(f"{row:14s} {shown(command(row, args.out))}")
        return
    threads = max(1, (os.cpu_count() or 1) // args.jobs) if args.jobs > 1 else None
    for row in rows:
        print(f"{row}: {shown(command(row, args.out))}", flush=True)
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futures = {pool.submit(measure, row, args.out, threads): row for row in rows}
        for number, future in enumerate(as_completed(futures), 1):
            print(f"[{number}/{len(rows)}] {json.dumps(future.result())}", flush=True)
    results = [future.result() for future in futures]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "table.json").write_text(json.dumps(results, indent=2))
    print()
    print(table(results))


if __name__ == "__main__":
    main()
