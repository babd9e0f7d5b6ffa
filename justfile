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
    CI=true cargo nextest run --workspace --all-features --locked -E 'test(/postgres|nats/) | package(homeroom-store-postgres) | package(homeroom-bus-nats) | binary(/postgres_binary|delivery_binary/)'

# Benchmarks; figures go to docs/benchmarks.md (each command is written there too).
bench:
    cargo run --release -p homeroom-bench -- commands
    cargo run --release -p homeroom-bench -- replay
    cargo run --release -p homeroom-bench -- inbox
    cargo run --release -p homeroom-bench -- postgres
    cargo run --release -p homeroom-bench -- deliveries

# Fails if the domain's dependency tree holds an I/O or runtime crate.
layering:
    ! cargo tree -p homeroom-domain -e normal | grep -E '\b(tokio|sqlx|axum|async-nats|kurrentdb)\b'
