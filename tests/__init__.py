import pytest

# The shared helpers' asserts (ground truth, record counts) show their values when they
# fail, as the tests' own do; registered before anything imports tests.support.
pytest.register_assert_rewrite("tests.support")
