#!/usr/bin/env bash
# Idempotent bootstrap: installs only what is missing, caches the rest under .cache/ and .venv/.
# Run by `make demo` and `make test`; a second run with everything present takes seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
CACHE=$ROOT/.cache
KAFKA_VERSION=3.9.1
TOXIPROXY_VERSION=v2.12.0
mkdir -p "$CACHE/bin" "$CACHE/kafka"
log() { printf 'bootstrap: %s\n' "$*" >&2; }

# 1. Debian packages: redis-server, postgresql, java, maven.
need_apt=()
command -v redis-server >/dev/null 2>&1 || [ -x /usr/bin/redis-server ] || need_apt+=(redis-server)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need_apt+=(postgresql)
command -v java >/dev/null 2>&1 || need_apt+=(openjdk-17-jre-headless)
command -v mvn >/dev/null 2>&1 || need_apt+=(maven)
if [ ${#need_apt[@]} -gt 0 ]; then
  log "apt-get install ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq || true
  $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  # Debian starts the packaged services; we run our own instances on free ports instead.
  $SUDO systemctl stop redis-server postgresql >/dev/null 2>&1 || true
  $SUDO service redis-server stop >/dev/null 2>&1 || true
  $SUDO service postgresql stop >/dev/null 2>&1 || true
fi

# 1b. Chromium for the report browser test (on by default; CACHECERT_WITH_CHROMIUM=0 skips it). Not
# fatal: without it that one test skips with its reason.
if [ "${CACHECERT_WITH_CHROMIUM:-1}" = 1 ] && ! command -v chromium >/dev/null 2>&1; then
  log "apt-get install chromium (report browser test)"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  [ ${#need_apt[@]} -gt 0 ] || $SUDO apt-get update -qq || true
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null \
    || log "could not install chromium; the browser test will skip"
fi

# 1c. Docker for the docker backend's tests (CACHECERT_WITH_DOCKER=0 skips). Debian's docker.io, and
# a daemon started here when none answers (vfs storage: works without overlayfs; no bridge or
# iptables: the backend uses host networking on 127.0.0.1). Not fatal: without a daemon those tests
# skip with their reason.
if [ "${CACHECERT_WITH_DOCKER:-1}" = 1 ] && [ "$(id -u)" = 0 ]; then
  if ! command -v dockerd >/dev/null 2>&1; then
    log "apt-get install docker.io (docker backend tests)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker.io >/dev/null 2>&1 \
      || log "could not install docker.io; docker backend tests will skip"
  fi
  if command -v dockerd >/dev/null 2>&1 && ! docker info >/dev/null 2>&1; then
    log "starting dockerd (vfs, host networking only)"
    nohup dockerd --storage-driver vfs --iptables=false --ip-masq=false --bridge=none \
      >"$CACHE/dockerd.log" 2>&1 &
    for _ in $(seq 1 30); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
    docker info >/dev/null 2>&1 || log "dockerd did not start (see .cache/dockerd.log); docker tests will skip"
  fi
fi

# 2. Kafka jars from Maven Central (pom.xml + dependency:copy-dependencies).
if [ ! -f "$CACHE/kafka/.done-$KAFKA_VERSION" ]; then
  log "fetching Kafka $KAFKA_VERSION jars from Maven Central"
  rm -rf "$CACHE/kafka/libs"
  mvn -q -B -f "$ROOT/docker/kafka-pom.xml" -Dkafka.version=$KAFKA_VERSION \
      dependency:copy-dependencies -DoutputDirectory="$CACHE/kafka/libs" -DincludeScope=runtime
  touch "$CACHE/kafka/.done-$KAFKA_VERSION"
fi

# 3. Toxiproxy server via go install (the binary is named `server`).
if [ ! -x "$CACHE/bin/toxiproxy-server" ]; then
  log "go install toxiproxy $TOXIPROXY_VERSION"
  GOBIN="$CACHE/bin" GOFLAGS=-mod=mod go install "github.com/Shopify/toxiproxy/v2/cmd/server@$TOXIPROXY_VERSION"
  mv "$CACHE/bin/server" "$CACHE/bin/toxiproxy-server"
fi

# 4. Python venv with pinned dependencies, and the project itself (editable).
if [ ! -x .venv/bin/python ]; then
  log "creating .venv"
  python3 -m venv .venv
fi
stamp=.venv/.deps-$(sha1sum requirements.lock pyproject.toml | sha1sum | cut -c1-12)
if [ ! -f "$stamp" ]; then
  log "installing Python dependencies"
  .venv/bin/pip install -q --disable-pip-version-check -r requirements.lock
  .venv/bin/pip install -q --disable-pip-version-check --no-deps --config-settings editable_mode=compat -e .
  rm -f .venv/.deps-*; touch "$stamp"
fi
# 5a. The linearizability search's compiled loop (checkers/_wgl.c, loaded by checkers/wgl.py). Not
# fatal: without a C compiler the pure-Python loop runs, with the same results, slower.
if [ ! -f checkers/_wgl.so ] || [ checkers/_wgl.c -nt checkers/_wgl.so ]; then
  if command -v cc >/dev/null 2>&1; then
    log "building checkers/_wgl.so"
    cc -O2 -std=c99 -Wall -Wextra -shared -fPIC -o checkers/_wgl.so checkers/_wgl.c \
      || log "could not build checkers/_wgl.so; the linearizability search runs in pure Python"
  else
    log "no C compiler: the linearizability search runs in pure Python (same results, slower)"
  fi
fi
# 5. The reference app-node services (examples/): built so the tests certify them. Each build is
# quick when nothing changed (go build's cache; the jar is newer than its sources).
log "building examples/go-cache and examples/java-cache"
sh examples/go-cache/build.sh
sh examples/java-cache/build.sh
log "ready"
