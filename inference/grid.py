"""Image grids with a header of column labels and a strip of row labels, laid out like A1111's X/Y plots."""

from __future__ import annotations

from PIL import Image, ImageDraw, ImageFont

from inference.axis_values import parse_axis_values as parse_axis_values  # the X/Y/Z plot's value syntax

BACKGROUND = "#ffffff"
TEXT_COLOUR = "#000000"
Font = ImageFont.FreeTypeFont | ImageFont.ImageFont


def _font(size: int) -> Font:
    """Pillow's bundled font at `size` px (a fixed bitmap font if Pillow was built without FreeType)."""
    return ImageFont.load_default(size=size)


def _break_word(draw: ImageDraw.ImageDraw, word: str, font: Font, width: int) -> list[str]:
    """Split one word that is wider than `width` into pieces that fit (at least one character each)."""
    pieces = []
    while word:
        cut = len(word)
        while cut > 1 and draw.textlength(word[:cut], font=font) > width:
            cut -= 1
        pieces.append(word[:cut])
        word = word[cut:]
    return pieces


def wrap_label(draw: ImageDraw.ImageDraw, text: str, font: Font, width: int) -> list[str]:
    """Word-wrap `text` to lines at most `width` px wide; newlines in `text` are kept."""
    lines: list[str] = []
    for paragraph in text.split("\n"):
        line = ""
        for word in paragraph.split():
            candidate = f"{line} {word}" if line else word
            if draw.textlength(candidate, font=font) <= width:
                line = candidate
                continue
            if line:
                lines.append(line)
            *full, line = _break_word(draw, word, font, width)
            lines.extend(full)
        lines.append(line)
    return lines


def _line_height(draw: ImageDraw.ImageDraw, font: Font) -> int:
    box = draw.textbbox((0, 0), "Ag", font=font)
    return box[3] - box[1]


def _draw_block(
    draw: ImageDraw.ImageDraw, lines: list[str], font: Font, box: tuple[int, int, int, int], spacing: int
) -> None:
    """Draw `lines` centred horizontally and vertically in `box` (left, top, right, bottom)."""
    height = _line_height(draw, font)
    total = len(lines) * height + (len(lines) - 1) * spacing
    y = box[1] + (box[3] - box[1] - total) // 2
    for line in lines:
        x = box[0] + (box[2] - box[0] - draw.textlength(line, font=font)) / 2
        draw.text((x, y), line, fill=TEXT_COLOUR, font=font)
        y += height + spacing


def _fit_height(lines: list[str], max_lines: int) -> list[str]:
    """Keep the first `max_lines` lines, marking a cut with an ellipsis (a row label may not overflow its row)."""
    if len(lines) <= max_lines:
        return lines
    kept = lines[: max(max_lines, 1)]
    kept[-1] = kept[-1].rstrip() + "..."
    return kept


def make_grid(images: list[list[Image.Image]], row_labels: list[str], col_labels: list[str]) -> Image.Image:
    """Rows x columns of images on white, column labels on top and row labels on the left (wrapped)."""
    if not images or any(len(row) != len(images[0]) for row in images):
        raise ValueError("images must be a non-empty list of rows of equal length")
    rows, cols = len(images), len(images[0])
    if len(row_labels) not in (0, rows) or len(col_labels) not in (0, cols):
        raise ValueError(f"{rows}x{cols} images need {rows} row labels and {cols} column labels (or none)")
    cell_w = max(image.width for row in images for image in row)
    cell_h = max(image.height for row in images for image in row)
    # A1111 sizes text from the cell; the floor keeps labels readable on small preview cells.
    font = _font(max(12, (cell_w + cell_h) // 25))
    spacing = font.size // 2 if isinstance(font, ImageFont.FreeTypeFont) else 4
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    line_h = _line_height(measure, font)
    pad_left = max(cell_w * 3 // 4, 10 * line_h) if any(row_labels) else 0
    col_lines = [wrap_label(measure, label, font, cell_w - spacing) for label in col_labels]
    tallest = max((len(lines) for lines in col_lines), default=0)
    pad_top = tallest * (line_h + spacing) + spacing if any(col_labels) else 0

    grid = Image.new("RGB", (pad_left + cols * cell_w, pad_top + rows * cell_h), BACKGROUND)
    draw = ImageDraw.Draw(grid)
    for r, row in enumerate(images):
        for c, image in enumerate(row):
            x = pad_left + c * cell_w + (cell_w - image.width) // 2
            y = pad_top + r * cell_h + (cell_h - image.height) // 2
            grid.paste(image.convert("RGB"), (x, y))
    for c, lines in enumerate(col_lines):
        _draw_block(
            draw, lines, font, (pad_left + c * cell_w, 0, pad_left + (c + 1) * cell_w, pad_top), spacing
        )
    max_lines = max(1, (cell_h + spacing) // (line_h + spacing))
    for r, label in enumerate(row_labels):
        lines = _fit_height(wrap_label(measure, label, font, pad_left - 2 * spacing), max_lines)
        _draw_block(
            draw, lines, font, (0, pad_top + r * cell_h, pad_left, pad_top + (r + 1) * cell_h), spacing
        )
    return grid
