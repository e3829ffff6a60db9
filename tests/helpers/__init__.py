"""What several test modules share: runs, their files, made-up data. Fixtures stay in conftest.py."""
