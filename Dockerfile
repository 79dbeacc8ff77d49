# postern: multi-stage build from a clean checkout.
#   docker build -t postern .
#   docker run -d --name postern --hostname mx.example.com --stop-timeout 40 \
#     -v postern-data:/var/lib/postern -p 25:2525 -p 127.0.0.1:8443:8443 postern
# (README, "Docker", says why each flag is there.) CI replays the build stages without a
# daemon (.ci/docker-replay.py), so a file missing from a COPY fails CI.
FROM rust:1.95-bookworm AS chef
RUN cargo install cargo-chef --locked --version 0.1.78
WORKDIR /src

# The recipe of the dependency layer: every workspace member's manifest and targets as cargo
# reads them, so it cannot drift from Cargo.toml (a hand-written list of stand-in sources
# did, and the build broke when the workspace gained bench/load).
FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS build
COPY --from=planner /src/recipe.json recipe.json
# Dependencies only, in a layer of their own: a change to postern's sources rebuilds only
# postern, not the few hundred crates under it.
RUN cargo chef cook --release --locked --recipe-path recipe.json --bin postern
# What `cargo build` reads: the workspace (bench/load is a member), the sources, the bench
# targets Cargo.toml names, and what the sources include (config, admin page templates and
# stylesheet).
COPY Cargo.toml Cargo.lock ./
COPY bench/load ./bench/load
COPY benches ./benches
COPY src ./src
COPY config ./config
COPY templates ./templates
COPY assets ./assets
RUN cargo build --release --locked --bin postern

# The same layout as the Debian package: /usr/sbin/postern, /etc/postern/postern.toml, data in
# /var/lib/postern (0700, user postern).
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --home-dir /var/lib/postern --shell /usr/sbin/nologin postern \
 && mkdir -p /etc/postern /var/lib/postern \
 && chown postern:postern /var/lib/postern && chmod 0700 /var/lib/postern
COPY --from=build /src/target/release/postern /usr/sbin/postern
COPY docker/postern.toml /etc/postern/postern.toml
# Every postern command in the container reads this config, `docker exec postern postern
# queue list` included.
ENV POSTERN_CONFIG=/etc/postern/postern.toml
USER postern
VOLUME ["/var/lib/postern"]
# SMTP listens on 2525 inside (no root needed); publish it as 25. Admin/control API on 8443:
# publish it on 127.0.0.1 only.
EXPOSE 2525 8443
# Healthy while the control API answers with this node's state (TLS, token, queue).
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
  CMD ["/usr/sbin/postern", "node", "status"]
# SIGTERM stops accepting and gives sessions smtp.shutdown_grace_secs (30) to finish: run the
# container with --stop-timeout (or docker stop -t) above that, or Docker kills it at 10 s.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/sbin/postern"]
CMD ["serve"]
