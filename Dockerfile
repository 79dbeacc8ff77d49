# postern: multi-stage build from a clean checkout.
#   docker build -t postern .
#   docker run -v postern-data:/var/lib/postern -p 25:2525 -p 8443:8443 postern
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY config ./config
COPY benches ./benches
RUN cargo build --release --locked --bin postern

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --home /var/lib/postern --shell /usr/sbin/nologin postern \
 && mkdir -p /etc/postern /var/lib/postern \
 && chown postern:postern /var/lib/postern && chmod 0700 /var/lib/postern
COPY --from=build /src/target/release/postern /usr/local/bin/postern
COPY docker/postern.toml /etc/postern/postern.toml
USER postern
VOLUME ["/var/lib/postern"]
# SMTP listens on 2525 inside (no root needed); publish it as 25. Admin/control API on 8443.
EXPOSE 2525 8443
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/postern", "--config", "/etc/postern/postern.toml"]
CMD ["serve"]
