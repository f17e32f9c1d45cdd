import pytest

from tasks.records import Chunk
from tasks.secrets import find_secrets, withhold_secrets

# Assembled at run time so this file itself holds no token-shaped literal.
GITHUB = "ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8"
SLACK = "xoxb-" + "123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx"
GOOGLE = "AIza" + "SyA1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q"
STRIPE = "sk_live_" + "4eC39HqLyjWDarjtT1zdp7dc"
JWT = "eyJhbGciOiJIUzI1NiJ9" + ".eyJzdWIiOiIxMjM0NTY3ODkwIn0" + ".dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"


@pytest.mark.parametrize(
    "line, kind",
    [
        ('const KEY: &str = "AKIAIOSFODNN7EXAMPLE";', "AWS access key id"),
        ('let aws_secret_access_key = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";', "AWS secret access key"),
        ('const PEM: &str = "-----BEGIN RSA PRIVATE KEY-----";', "private key"),
        ('const PEM: &str = "-----BEGIN OPENSSH PRIVATE KEY-----";', "private key"),
        (f'let t = "{GITHUB}";', "GitHub token"),
        (f'let s = "{SLACK}";', "Slack token"),
        (f'let g = "{GOOGLE}";', "Google API key"),
        (f'let k = "{STRIPE}";', "Stripe live key"),
        (f'let jwt = "{JWT}";', "JSON Web Token"),
        ('const API_KEY: &str = "q8Zt2LmX9vR4bW7nK3pY";', "secret-like value assigned to a secret-like name"),
        ('Config { password: "Hv7#pQ2$zL9!mW4x" }', "secret-like value assigned to a secret-like name"),
    ],
)
def test_each_kind_of_secret_is_found(line, kind):
    assert [k for _, k in find_secrets(line)] == [kind]


@pytest.mark.parametrize(
    "line",
    [
        "pub fn load_secret(name: &str) -> Option<String> {",
        "let token = tokenizer.next_token();",
        'const TOKEN_KIND: &str = "identifier_token_kind";',
        'let password = "changeme_changeme_changeme";',
        'const API_KEY_ENV: &str = "MY_SERVICE_API_KEY_VARIABLE";',
        'let secret_path = "/etc/myapp/secret/config.toml";',
        'let api_key = "<your-api-key-goes-here>";',
        "// see https://example.com/docs/tokens",
    ],
)
def test_secret_looking_names_without_secret_values_are_not_flagged(line):
    assert find_secrets(line) == []


def make_chunk(code: str, start_line: int = 10, doc: str = "") -> Chunk:
    return Chunk("id", "item", "src/cfg.rs", "demo::cfg", "cfg", "const", start_line, start_line + 5, 0, 1,
                 start_line, start_line + 5, doc, code, code, 10)  # fmt: skip


def test_withhold_reports_path_line_and_kind_never_the_secret():
    clean = make_chunk("fn region() -> String { todo!() }")
    leaky = make_chunk('/// Test account.\npub const KEY: &str = "AKIAIOSFODNN7EXAMPLE";', start_line=20)
    kept, findings = withhold_secrets([clean, leaky])
    assert kept == [clean]
    assert [str(f) for f in findings] == ["src/cfg.rs:21 (AWS access key id)"]
    assert "AKIA" not in str(findings)


def test_secret_in_a_doc_comment_is_withheld_too():
    kept, findings = withhold_secrets([make_chunk("fn f() {}", doc=f"Use token {GITHUB} to log in")])
    assert kept == [] and findings[0].kind == "GitHub token"
