"""The built-in demo model: a tiny AITQE-architecture model trained on a synthetic shapes world."""

from pathlib import Path

DEMO_MODEL = Path(__file__).parent / "aitqe-demo"
DEMO_NOTE = ("demo model trained on synthetic shapes (runtime.demo), not AITQE: "
             "its verdicts mean nothing for real images")
