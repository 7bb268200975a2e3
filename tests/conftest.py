import sys
from pathlib import Path

# Tests import the project's packages and tests.support from the repo root.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
