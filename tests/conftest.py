"""Suite-wide settings: no test may reach a model hub (the suite runs offline)."""

import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MEDCLF_CACHE", os.path.join(os.path.dirname(__file__), "..", ".medclf-cache", "tests"))

sys.path.insert(0, os.path.dirname(__file__))  # shared helper modules of the tests (dicom_files)
