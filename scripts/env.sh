# Shared set-up for ./lgsp-bus and ./test: a virtual environment in .venv with the
# project installed (editable), re-installed only when pyproject.toml changes.
ROOT="${ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"
VENV="${LGSP_VENV:-$ROOT/.venv}"

ensure_venv() { # [extra]
  local extra="${1:-}" spec="." stamp
  [ -n "$extra" ] && spec=".[$extra,fast]" || spec=".[fast]"
  stamp="$VENV/.lgsp-stamp-${extra:-run}"
  local python="${PYTHON:-python3}"
  if ! command -v "$python" >/dev/null 2>&1; then
    echo "lgsp-bus needs Python 3.11 or newer (python3 was not found)" >&2
    exit 1
  fi
  if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "lgsp-bus needs Python 3.11 or newer; $python is $("$python" -V 2>&1)" >&2
    exit 1
  fi
  if [ ! -x "$VENV/bin/python" ]; then
    echo "setting up $VENV (first run)…" >&2
    "$python" -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --upgrade pip >&2
  fi
  if [ ! -f "$stamp" ] || [ "$ROOT/pyproject.toml" -nt "$stamp" ]; then
    echo "installing lgsp-bus and its dependencies into $VENV…" >&2
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e "$ROOT/$spec" >&2
    touch "$stamp"
  fi
}
