"""Stand-ins and fixtures the test modules share: import them from here, not from test_*."""
