"""`nmcm calibrate --target hardware`: the board calibration image, tested up to pyOCD's API.

No board is attached here. The board image is really built for the Nucleo boards (the QEMU
calibration program timed by the DWT, firmware/apps/calibrate-board) and really flashed through
nmcm's pyOCD code, into the fake pyOCD of tests/fake_pyocd.py; the fake board then does what the
image does on the chip: it leaves its log in RAM, at the addresses of the image's own symbols. The
figures it leaves are QEMU's instruction counts of the very same suite times a known factor, so
the cycle weights nmcm fits from them must be that factor times the instruction weights, and must
then time that MCU in `estimate`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from nmcm_deploy.build.elfsize import symbol_addresses
from nmcm_deploy.cli import app
from nmcm_deploy.costs import calibrate as calibrate_module
from nmcm_deploy.costs import coefficients as coef
from nmcm_deploy.costs import measure as ms
from nmcm_deploy.costs import model
from nmcm_deploy.costs.calibrate import calibrate_board, fit_coefficients, fit_suite
from nmcm_deploy.flash import pyocd_session
from nmcm_deploy.flash.pyocd_session import FlashRequest
from nmcm_deploy.profiles import mcu
from tests.conftest import QUICKSTART
from tests.fake_pyocd import FakeBoard, FakePyocd

UID = "0670FF383133524157185532"
FACTOR = 2  # cycles per instruction the fake board reports (the F413 profile assumes 1.6)
STATE_ADDRESSES = (ms.STATE_SYMBOL, ms.LOG_USED_SYMBOL, ms.LOG_SYMBOL)


@pytest.fixture(scope="module")
def measured(arm_state: Path) -> tuple[list[ms.SuiteEntry], ms.Calibration, ms.CalibrationImage]:
    """A few models of the fit suite that fit an F413, measured under QEMU (instructions), and
    the F413 board image of that same suite (built once: measure_board finds it in the cache)."""
    entries = ms.board_entries(fit_suite()[:10], "stm32f413zh")
    assert 4 <= len(entries) <= 10
    qemu = ms.measure(entries, "cortex-m4")
    files = ms.write_suite(entries, arm_state / "board-suite" / ms.SUITE_NAME)
    image = ms.build_board_image(files.suite, "stm32f413zh", "nucleo-f413zh")
    return entries, qemu, image


def log_text(qemu: ms.Calibration, factor: int) -> str:
    lines = ["nmcm calibrate: suite on the board, figures in cycles"]
    for i, e in enumerate(qemu.entries):
        lines.append(
            f"calibrate entry={i} samples={e.samples} "
            f"forward={','.join(str(factor * v) for v in e.forward)} "
            f"backward={','.join(str(factor * v) for v in e.backward)} "
            f"loss={factor * e.loss} step={factor * e.step}"
        )
    lines.append("calibrate done")
    return "\n".join(lines) + "\n"


def firmware(image: ms.CalibrationImage, text: str, state: int) -> Callable[[FakeBoard], None]:
    """What the calibration image does on the board after its reset: its RAM log and state."""
    where = symbol_addresses(image.elf, STATE_ADDRESSES)

    def run(board: FakeBoard) -> None:
        data = text.encode()
        for name, value in ((ms.STATE_SYMBOL, state), (ms.LOG_USED_SYMBOL, len(data))):
            for i, byte in enumerate(value.to_bytes(4, "little")):
                board.ram[where[name] + i] = byte
        for i, byte in enumerate(data):
            board.ram[where[ms.LOG_SYMBOL] + i] = byte

    return run


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakePyocd:
    world = FakePyocd([FakeBoard(UID, board_target="nucleo_f413zh")])
    monkeypatch.setattr(pyocd_session, "_api", world)
    return world


def request_for(pack: Path) -> Callable[[Path], FlashRequest]:
    def request(image: Path) -> FlashRequest:
        return FlashRequest(
            node="f413", uid=UID, target=mcu("stm32f413zh").pyocd_target, pack=pack, image=image
        )

    return request


@pytest.mark.parametrize(
    ("mcu_name", "board"), [("stm32f413zh", "nucleo-f413zh"), ("stm32h7a3zi", "nucleo-h7a3zi-q")]
)
def test_the_board_image_has_its_ram_log_and_fits_the_mcu(
    arm_state: Path, mcu_name: str, board: str
) -> None:
    entries = ms.board_entries(fit_suite()[:10], mcu_name)
    files = ms.write_suite(entries, arm_state / f"suite-{mcu_name}" / ms.SUITE_NAME)
    image = ms.build_board_image(files.suite, mcu_name, board)
    assert image.machine == mcu_name and image.sizes.fits, image.sizes.shortfall()
    assert image.elf.with_suffix(".bin").is_file()
    addresses = ms.board_addresses(image)
    # The RAM log is in the MCU's SRAM, where the probe reads it.
    assert all(
        any(r.origin <= addresses[n] < r.end for r in mcu(mcu_name).sram_regions)
        for n in STATE_ADDRESSES
    )


def test_board_cycles_fit_into_cycle_weights_that_time_the_mcu(
    measured: tuple[list[ms.SuiteEntry], ms.Calibration, ms.CalibrationImage],
    fake: FakePyocd,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    entries, qemu, image = measured
    board = fake.board(UID)
    board.on_reset = firmware(image, log_text(qemu, FACTOR), 0x454E4F44)  # done
    pack = tmp_path / "Keil.STM32F4xx_DFP.2.17.1.pack"
    pack.write_bytes(b"pack")
    # The calibration of the module's few models (the whole fit suite takes minutes under QEMU).
    monkeypatch.setattr(calibrate_module, "board_entries", lambda suite, name: entries)
    steps: list[str] = []
    weights = calibrate_board("stm32f413zh", "nucleo-f413zh", request_for(pack), step=steps.append)
    assert board.resets == 1 and any("programming" in s for s in steps)
    assert weights.unit == "cycles" and weights.mcu == "stm32f413zh"
    assert weights.source.startswith("dwt cycles on nucleo-f413zh")
    # The same observations in instructions give weights FACTOR times smaller.
    instructions = fit_coefficients(qemu, "qemu")
    for kind, directions in instructions.layers.items():
        for direction, w in directions.items():
            scaled = {k: FACTOR * v for k, v in w.items()}
            assert weights.layer(kind, direction) == pytest.approx(scaled, rel=1e-6, abs=1e-9)
    assert weights.step == pytest.approx({k: FACTOR * v for k, v in instructions.step.items()})


def scaled(weights: coef.Coefficients, factor: float, mcu_name: str) -> coef.Coefficients:
    def times(w: dict[str, float]) -> dict[str, float]:
        return {k: factor * v for k, v in w.items()}

    return coef.Coefficients(
        core=weights.core,
        source="test: the shipped weights times a factor",
        layers={k: {d: times(w) for d, w in ds.items()} for k, ds in weights.layers.items()},
        loss=times(weights.loss),
        step=times(weights.step),
        unit="cycles",
        mcu=mcu_name,
    )


def test_a_board_calibration_times_its_mcu_in_estimate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cycle weights of the F413 (the Cortex-M4 instruction weights times FACTOR) under the
    state folder: estimate's F413 cycles are FACTOR times its instructions, and its seconds
    those cycles at 100 MHz; the H7A3 keeps the profile's cycles per instruction."""
    monkeypatch.setenv("NMCM_STATE_DIR", str(tmp_path))
    plain = CliRunner().invoke(app, ["estimate", str(QUICKSTART), "-o", "json"])
    assert plain.exit_code == 0, plain.output
    coef.dump(
        scaled(coef.shipped("cortex-m4"), FACTOR, "stm32f413zh"), coef.board_path("stm32f413zh")
    )
    model.board_coefficients.cache_clear()
    try:
        result = CliRunner().invoke(app, ["estimate", str(QUICKSTART), "-o", "json"])
    finally:
        model.board_coefficients.cache_clear()
    assert result.exit_code == 0, result.output
    before, after = json.loads(plain.stdout)["nodes"], json.loads(result.stdout)["nodes"]
    f413, h7a3 = after
    assert f413["mcu"] == "stm32f413zh" and h7a3["mcu"] == "stm32h7a3zi"
    for cost in f413["layer_costs"]:
        for direction in ("forward", "backward"):
            instructions = cost[f"{direction}_instructions"]
            assert abs(cost[f"{direction}_cycles"] - FACTOR * instructions) <= FACTOR
    assert h7a3["layer_costs"] == before[1]["layer_costs"]
    f413_cpi = mcu("stm32f413zh").cycles_per_instruction.value
    assert f413["compute_s"] == pytest.approx(before[0]["compute_s"] * FACTOR / f413_cpi, rel=1e-9)


@pytest.mark.parametrize(
    ("state", "message"),
    [
        (0x4C494146, "stopped on an error"),
        (0x4C465653, "filled its 16384-byte RAM log"),
        (0x52554E31, "did not finish within"),
    ],
)
def test_a_board_run_that_did_not_end_well_is_a_clear_error(
    measured: tuple[list[ms.SuiteEntry], ms.Calibration, ms.CalibrationImage],
    fake: FakePyocd,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    state: int,
    message: str,
) -> None:
    entries, _, image = measured
    fake.board(UID).on_reset = firmware(image, "fatal: calibration entry 3: blob refused\n", state)
    pack = tmp_path / "Keil.STM32F4xx_DFP.2.17.1.pack"
    pack.write_bytes(b"pack")
    with pytest.raises(ms.CalibrationError) as failed:
        ms.measure_board(entries, "stm32f413zh", "nucleo-f413zh", request_for(pack), timeout_s=0.2)
    assert message in failed.value.message
    assert "blob refused" in failed.value.message  # the log's tail, read from the board


class _Memory:
    """A target whose RAM says 'running' for a while, then 'done' (read_board_log's polling)."""

    def __init__(self, addresses: dict[str, int], runs_for: int, text: bytes) -> None:
        self.addresses, self.reads, self.runs_for, self.text = addresses, 0, runs_for, text

    def read_memory_block8(self, addr: int, size: int) -> list[int]:
        if addr == self.addresses[ms.STATE_SYMBOL]:
            self.reads += 1
            state = 0x52554E31 if self.reads <= self.runs_for else 0x454E4F44
            return list(state.to_bytes(4, "little"))
        if addr == self.addresses[ms.LOG_USED_SYMBOL]:
            return list(len(self.text).to_bytes(4, "little"))
        return list(self.text[:size])


def test_the_log_is_read_once_the_board_says_it_is_done() -> None:
    addresses = {ms.STATE_SYMBOL: 0x20000000, ms.LOG_USED_SYMBOL: 0x20000004, ms.LOG_SYMBOL: 0x8}
    target = _Memory(addresses, runs_for=3, text=b"calibrate done\n")
    slept: list[float] = []
    clock: Iterator[float] = iter(range(100))
    text = ms.read_board_log(
        target, addresses, timeout_s=50, clock=lambda: float(next(clock)), sleep=slept.append
    )
    assert text == "calibrate done\n" and len(slept) == 3
