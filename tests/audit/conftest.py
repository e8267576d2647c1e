from tests.api.api_support import org  # noqa: F401 - fixture
