"""Reading the native stack's env file, and what of it the report may show."""

from loadtest.stack_env import read_env_file, redact


def test_stack_env_file_is_read_and_secrets_are_redacted(tmp_path):
    env_file = tmp_path / "env"
    env_file.write_text(
        "# Written by `python -m deploy.stack up`.\n"
        "SECRET_KEY=abc\n"
        "DATABASE_DIRECT_URL=postgres://items:s3cret@127.0.0.1:55432/items\n"
        "STACK_HTTP_URL=http://127.0.0.1:8080\n"
    )

    env = read_env_file(env_file)
    shown = redact(env)

    assert env["DATABASE_DIRECT_URL"] == "postgres://items:s3cret@127.0.0.1:55432/items"
    assert shown == {
        "DATABASE_DIRECT_URL": "postgres://items:***@127.0.0.1:55432/items",
        "SECRET_KEY": "***",
        "STACK_HTTP_URL": "http://127.0.0.1:8080",
    }
