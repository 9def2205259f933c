"""Fuzzing: the codec, the dialects' decoders and the running server (see
tests/fuzz/README.md for the long runs and their last results)."""
