# Homeroom developer recipes. `just --list` shows them.

# Format every crate.
fmt:
    cargo fmt --all

# Lints as CI sees them.
lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets --all-features -- -D warnings

# The whole test suite (the README's command).
test:
    cargo nextest run --workspace --all-features --locked

# Only the tests that need PostgreSQL and NATS, failing if they are missing.
test-services:
    CI=true cargo nextest run --workspace --all-features --locked -E 'test(/postgres|nats/)'

# Benchmarks; figures go to docs/benchmarks.md.
bench:
    cargo run --release -p homeroom-bench -- commands

# Fails if the domain's dependency tree holds an I/O or runtime crate.
layering:
    ! cargo tree -p homeroom-domain -e normal | grep -E '\b(tokio|sqlx|axum|async-nats|kurrentdb)\b'
