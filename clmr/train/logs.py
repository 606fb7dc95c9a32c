"""The run's one logging path: every logged value goes to TensorBoard (`logs/tensorboard`) and to a CSV
file (`logs/csv/metrics.csv`, one row per logged step); rank 0 only. The CSV rows are buffered and
written at every checkpoint, so a killed run keeps its log up to its last checkpoint; a resumed run
first drops the rows logged after the checkpoint it resumes from, then appends."""

from __future__ import annotations

import csv
from pathlib import Path

from clmr.files import atomic_open


class RunLog:
    """`log(values, step)` buffers; `flush()` writes the CSV rows and the TensorBoard events."""

    def __init__(self, logs: Path, resume_step: int | None, enabled: bool = True) -> None:
        self.enabled, self.rows = enabled, []
        self.csv_path = logs / "csv" / "metrics.csv"
        self.keys: list[str] = []
        self._tb = None
        if not enabled:
            return
        from torch.utils.tensorboard import SummaryWriter

        self.csv_path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is None:
            self.csv_path.unlink(missing_ok=True)
        elif self.csv_path.is_file():
            with open(self.csv_path, newline="") as f:
                reader = csv.DictReader(f)
                rows, self.keys = list(reader), list(reader.fieldnames or [])
            kept = [r for r in rows if int(r["step"]) <= resume_step]
            if len(kept) < len(rows):
                self._write(kept)
        # purge_step: TensorBoard hides the events logged after the checkpoint the run resumes from
        self._tb = SummaryWriter(str(logs / "tensorboard"), purge_step=resume_step)

    def log(self, values: dict[str, float], step: int) -> None:
        if not self.enabled:
            return
        for name, value in values.items():
            self._tb.add_scalar(name, value, step)
        self.rows.append({"step": step, **values})

    def flush(self) -> None:
        """Write the buffered rows (the header grows when a new key appears)."""
        if not self.enabled or not self.rows:
            return
        new = sorted({k for row in self.rows for k in row} - set(self.keys))
        if new or not self.csv_path.is_file():
            old = []
            if self.csv_path.is_file():
                with open(self.csv_path, newline="") as f:
                    old = list(csv.DictReader(f))
            self.keys = ["step", *sorted((set(self.keys) | set(new)) - {"step"})]
            self._write(old + self.rows)
        else:
            with open(self.csv_path, "a", newline="") as f:
                csv.DictWriter(f, fieldnames=self.keys).writerows(self.rows)
        self.rows = []
        self._tb.flush()

    def _write(self, rows: list[dict]) -> None:
        with atomic_open(self.csv_path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.keys)
            writer.writeheader()
            writer.writerows(rows)

    def close(self) -> None:
        self.flush()
        if self._tb is not None:
            self._tb.close()
