"""The test suite is one package, so every helper is imported under one name: ``tests.<module>``."""
