"""pitunnel's tests: tests/unit (fast, no root) and tests/lab (real hosts in the local lab, root)."""
