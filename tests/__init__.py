"""DIM's tests: unit tests beside integration tests (tests.integration) against real services."""
