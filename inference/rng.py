"""NVIDIA's `torch.randn` on any device: A1111's "NV" RNG source, as stable-diffusion-webui v1.10.1 has it.

On a CUDA device, PyTorch draws normal noise with cuRAND's Philox4x32-10 generator, so the same seed gives
different noise on CUDA and on the CPU (which uses a Mersenne twister). A1111's "NV" RNG source recomputes
the CUDA numbers with numpy, so that a seed gives the same picture whatever the machine. `PhiloxGenerator`
does the same, in three steps.

1. Counter and key. Element `i` of the output (in C order) gets its own 128-bit counter, four 32-bit
   words `(c0, c1, c2, c3)`: `c0, c1` hold the 64-bit offset (low word first) and `c2, c3` hold the 64-bit
   index `i`. This is cuRAND's `curand_init(seed, subsequence=i, offset)` layout, the one PyTorch's CUDA
   kernel uses with one thread per element. The 64-bit seed is the key `(k0, k1)`, low word first.

2. Philox4x32-10. Ten rounds scramble the counter. Each round multiplies two words by fixed constants,
   keeping both halves of the 64-bit products, and mixes them with the other words and the key:

       hi0, lo0 = mulhilo(0xD2511F53, c0)
       hi1, lo1 = mulhilo(0xCD9E8D57, c2)
       c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0

   and between rounds the key steps by the Weyl constants `(0x9E3779B9, 0xBB67AE85)`, modulo 2**32.

3. Box-Muller. Of the four 32-bit words out, the first two, `x` and `y`, become one normal number:

       u = x * 2**-32 + 2**-33           (in (0, 1), so log(u) is finite)
       v = y * 2**-32 * 2pi + 2**-33 * 2pi
       n = sqrt(-2 log u) * sin(v)

   cuRAND also makes `sqrt(-2 log u) * cos(v)` and two more numbers from the last two words; PyTorch puts
   those in elements past the number of threads it launches, so the one-element-per-thread picture above
   holds up to that many elements (some hundred thousand on current GPUs, depending on the GPU: more than
   one image's latent needs; A1111 draws each image's noise on its own).
   As in A1111, the constants are float32 (cuRAND's `CURAND_2POW32_INV` and `CURAND_2POW32_INV_2PI`) and the
   arithmetic is float64, rounded to float32 at the end. CUDA computes in float32 with fast intrinsics,
   so A1111's numbers (and these, which equal them bit for bit) agree with CUDA's to float32 rounding,
   not always bit for bit.

Consecutive `randn` calls continue the stream: each call advances the offset by one, that is one counter
step, the same as PyTorch's CUDA generator advances after drawing a tensor of up to that many elements.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

_MASK32 = 0xFFFFFFFF
_PHILOX_M = (0xD2511F53, 0xCD9E8D57)  # round multipliers
_PHILOX_W = (0x9E3779B9, 0xBB67AE85)  # key increments (Weyl sequence)
_PHILOX_ROUNDS = 10

# cuRAND's float32 constants, used in float64 arithmetic as A1111 does.
_TWO_POW32_INV = float(np.float32(2.3283064e-10))
_TWO_POW32_INV_2PI = float(np.float32(2.3283064e-10 * 6.2831855))


def _mulhilo(a: np.ndarray, multiplier: int) -> tuple[np.ndarray, np.ndarray]:
    """The high and low 32-bit words of `a * multiplier`, for a uint32 array `a`."""
    product = a.astype(np.uint64) * np.uint64(multiplier)
    return (product >> np.uint64(32)).astype(np.uint32), (product & np.uint64(_MASK32)).astype(np.uint32)


def philox4x32(counter: np.ndarray, key: tuple[int, int], rounds: int = _PHILOX_ROUNDS) -> np.ndarray:
    """Philox4x32: a (4, N) uint32 counter and a (k0, k1) key to (4, N) uint32 random words."""
    c0, c1, c2, c3 = (np.asarray(word, dtype=np.uint32) for word in counter)
    k0, k1 = key
    for round_index in range(rounds):
        if round_index:
            k0, k1 = (k0 + _PHILOX_W[0]) & _MASK32, (k1 + _PHILOX_W[1]) & _MASK32
        hi0, lo0 = _mulhilo(c0, _PHILOX_M[0])
        hi1, lo1 = _mulhilo(c2, _PHILOX_M[1])
        c0, c1, c2, c3 = hi1 ^ c1 ^ np.uint32(k0), lo1, hi0 ^ c3 ^ np.uint32(k1), lo0
    return np.stack([c0, c1, c2, c3])


def box_muller(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The first (sine) normal of the Box-Muller pair made from uint32 words `x` and `y`, as float32."""
    u = x.astype(np.float64) * _TWO_POW32_INV + _TWO_POW32_INV / 2
    v = y.astype(np.float64) * _TWO_POW32_INV_2PI + _TWO_POW32_INV_2PI / 2
    return (np.sqrt(-2.0 * np.log(u)) * np.sin(v)).astype(np.float32)


def _split64(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Low and high 32-bit words of a uint64 array."""
    return (values & np.uint64(_MASK32)).astype(np.uint32), (values >> np.uint64(32)).astype(np.uint32)


def _seed_to_uint64(seed: int) -> int:
    """The seed as torch.manual_seed reads it: negative seeds wrap modulo 2**64."""
    seed = int(seed)
    if not -(2**63) <= seed < 2**64:
        raise ValueError(f"seed {seed} is outside [-2**63, 2**64)")
    return seed % 2**64


class PhiloxGenerator:
    """Normal noise equal to `torch.randn(shape, device="cuda")` after `torch.manual_seed(seed)`."""

    def __init__(self, seed: int) -> None:
        self.seed = _seed_to_uint64(seed)
        self.offset = 0

    def randn(self, shape: Sequence[int]) -> torch.Tensor:
        """The next `shape` of standard normal float32 numbers, on the CPU; the offset then moves on by one."""
        shape = tuple(int(size) for size in shape)
        count = int(np.prod(shape, dtype=np.int64))
        offset_lo, offset_hi = self.offset & _MASK32, (self.offset >> 32) & _MASK32
        index_lo, index_hi = _split64(np.arange(count, dtype=np.uint64))
        counter = np.stack(
            [np.full(count, offset_lo, np.uint32), np.full(count, offset_hi, np.uint32), index_lo, index_hi]
        )
        self.offset += 1
        words = philox4x32(counter, (self.seed & _MASK32, self.seed >> 32))
        return torch.from_numpy(box_muller(words[0], words[1]).reshape(shape))
