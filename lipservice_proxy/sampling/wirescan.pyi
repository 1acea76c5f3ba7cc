# The compiled scan (wirescan.pyx): its types, for checkers and linters.
from .scan import ScopeScan

def scan_request(raw: bytes) -> list[list[ScopeScan]] | None: ...
