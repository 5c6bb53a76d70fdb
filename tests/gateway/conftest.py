from tests.support.sharing import sharing  # noqa: F401  (the fixture, for every test here)
