# the hf extra is optional: without transformers this directory is not collected (the test modules
# import hyperconn.hf, which would fail naming the missing extra)
try:
    import transformers  # noqa: F401
except ImportError:
    collect_ignore_glob = ["test_*.py"]
