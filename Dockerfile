# postern: multi-stage build from a clean checkout.
#   docker build -t postern .
#   docker run -d --name postern --hostname mx.example.com --stop-timeout 40 \
#     -v postern-data:/var/lib/postern -p 25:2525 -p 127.0.0.1:8443:8443 postern
# (README, "Docker", says why each flag is there.)
FROM rust:1.95-bookworm AS build
WORKDIR /src
# Dependencies first, in a layer of their own: a change to postern's sources rebuilds only
# postern, not the few hundred crates under it. The stand-in sources are thrown away.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src benches \
 && echo 'fn main() {}' > src/main.rs \
 && touch src/lib.rs \
 && for b in proto spool policy queue_memory session_memory; do echo 'fn main() {}' > benches/$b.rs; done \
 && cargo build --release --locked --bin postern \
 && rm -rf src benches
COPY src ./src
COPY config ./config
COPY benches ./benches
# The stand-ins' build is older than the real sources; touch so cargo rebuilds postern itself.
RUN touch src/main.rs src/lib.rs && cargo build --release --locked --bin postern

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --home /var/lib/postern --shell /usr/sbin/nologin postern \
 && mkdir -p /etc/postern /var/lib/postern \
 && chown postern:postern /var/lib/postern && chmod 0700 /var/lib/postern
COPY --from=build /src/target/release/postern /usr/local/bin/postern
COPY docker/postern.toml /etc/postern/postern.toml
# Every postern command in the container reads this config, `docker exec postern postern
# queue list` included.
ENV POSTERN_CONFIG=/etc/postern/postern.toml
USER postern
VOLUME ["/var/lib/postern"]
# SMTP listens on 2525 inside (no root needed); publish it as 25. Admin/control API on 8443:
# publish it on 127.0.0.1 only.
EXPOSE 2525 8443
# SIGTERM stops accepting and gives sessions smtp.shutdown_grace_secs (30) to finish: run the
# container with --stop-timeout (or docker stop -t) above that, or Docker kills it at 10 s.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/postern"]
CMD ["serve"]
