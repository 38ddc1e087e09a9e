# Sourced by scripts/run (BOOTSTRAP_MODE=run) and scripts/test (BOOTSTRAP_MODE=test): make sure the
# machine has what that command needs, then (re)build the virtualenv in .venv when setup.cfg changed.
# Idempotent and quick when nothing changed (a stamp per mode).
#   run:  what `pcapwatch demo` needs: tcpdump, and curl (one of the demo's clients); pcapwatch
#         with its core dependencies only (no output extras). Nothing that starts a daemon.
#   test: the real programs the integration tests drive (nginx, redis, rsyslog, prometheus, ...)
#         and pcapwatch with the `test` extra (every output's client library, pytest, ruff, mypy).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV="$ROOT/.venv"
PY=${PYTHON:-python3}
MODE=${BOOTSTRAP_MODE:-test}

# Debian packages. tests/integration/test_packaging.py holds RUN_DEBS to "no daemon": none of them
# ships a systemd service. python3-venv: Debian's python3 has no ensurepip (so no `-m venv`) without it.
RUN_DEBS=(tcpdump curl python3-venv)
TEST_DEBS=(tcpdump python3-venv tshark nginx-light curl wrk apache2-utils httpry ethtool iproute2 gzip procps systemd redis-server rsyslog prometheus logrotate man-db groff-base)
if [ "$MODE" = run ]; then
  DEBS=("${RUN_DEBS[@]}")
  EXTRAS=""
else
  DEBS=("${TEST_DEBS[@]}")
  EXTRAS="[test]"
fi
need_debs() {
  local missing=()
  for p in "${DEBS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  echo "${missing[@]:-}"
}
if command -v apt-get >/dev/null 2>&1 && command -v dpkg-query >/dev/null 2>&1; then
  missing=$(need_debs)
  if [ -n "$missing" ]; then
    if [ "$(id -u)" = 0 ]; then
      echo "bootstrap: installing Debian packages: $missing" >&2
      export DEBIAN_FRONTEND=noninteractive
      apt-get update -q >&2
      # shellcheck disable=SC2086
      apt-get install -y -q --no-install-recommends $missing >&2
    else
      echo "bootstrap: not root, so not installing: $missing (tests that need them will skip)" >&2
    fi
  fi
fi

stamp="$VENV/.pcapwatch-setup-$MODE"
want=$(cat "$ROOT/setup.cfg" "$ROOT/setup.py" "$ROOT/pyproject.toml" | sha256sum | cut -d' ' -f1)
if [ ! -x "$VENV/bin/python" ]; then
  echo "bootstrap: creating $VENV" >&2
  "$PY" -m venv "$VENV"
fi
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "bootstrap: installing pcapwatch$EXTRAS and its dependencies into $VENV" >&2
  "$VENV/bin/python" -m pip install -q --upgrade pip >&2
  "$VENV/bin/python" -m pip install -q -e "$ROOT$EXTRAS" >&2
  echo "$want" > "$stamp"
fi
export PATH="$VENV/bin:$PATH"
