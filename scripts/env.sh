# Shared set-up for ./lgsp-bus and ./test: a virtual environment in .venv with the
# project installed (editable), re-installed only when pyproject.toml changes.
# Progress goes to stderr, one line per phase (plus a live package counter on a terminal);
# pip's full output is kept in .venv/pip-install.log and shown only when pip fails.
ROOT="${ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"
VENV="${LGSP_VENV:-$ROOT/.venv}"

_say() { echo "lgsp-bus: $*" >&2; }

# Reads pip's output, appends it to the log ($1) and reports progress: on a terminal one
# self-rewriting line per package, elsewhere (CI, redirected) a line every 10 packages.
_pip_progress() {
  local log="$1" line name collected=0 tty=0
  [ -t 2 ] && tty=1
  while IFS= read -r line; do
    printf '%s\n' "$line" >>"$log"
    case "$line" in
      "Collecting "* | "Processing "*.whl*)
        collected=$((collected + 1))
        name="${line#* }"
        name="${name##*/}"
        name="${name%%[ <>=!~;\[(]*}"
        name="${name%%-[0-9]*}"
        if [ "$tty" = 1 ]; then
          printf '\r\033[K  fetching package %d: %s' "$collected" "$name" >&2
        elif [ $((collected % 10)) = 0 ]; then
          echo "  fetched $collected packages (latest: $name)" >&2
        fi
        ;;
      "  Installing build dependencies: started")
        [ "$tty" = 1 ] && printf '\r\033[K  preparing the build (hatchling)…' >&2
        ;;
      "Installing collected packages: "*)
        name="${line#Installing collected packages: }"
        [ "$tty" = 1 ] && printf '\r\033[K' >&2
        echo "  fetched $collected; installing $(($(tr -cd , <<<"$name" | wc -c) + 1)) package(s)…" >&2
        ;;
    esac
  done
  [ "$tty" = 1 ] && [ "$collected" -gt 0 ] && printf '\r\033[K' >&2
  return 0
}

_pip() { # pip arguments…: run pip, report progress; on failure show the end of its log
  local log="$VENV/pip-install.log" rc=0
  : >"$log"
  (
    set -o pipefail
    "$VENV/bin/python" -m pip install --disable-pip-version-check --progress-bar off "$@" 2>&1 \
      | _pip_progress "$log"
  ) || rc=$?
  if [ "$rc" != 0 ]; then
    echo "lgsp-bus: pip failed (exit $rc); the end of its log ($log):" >&2
    tail -n 25 "$log" >&2
  fi
  return "$rc"
}

ensure_venv() { # [extra]
  local extra="${1:-}" spec="." stamp started=$SECONDS step=""
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
    _say "first run: setting up $VENV (about a minute with a fast network; later runs start at once)"
    _say "[1/3] creating the virtual environment ($("$python" -V 2>&1))"
    "$python" -m venv "$VENV"
    _say "[2/3] upgrading pip"
    _pip --upgrade pip
    rm -f "$VENV"/.lgsp-stamp-*
    step="[3/3] "
  fi
  if [ ! -f "$stamp" ] || [ "$ROOT/pyproject.toml" -nt "$stamp" ]; then
    _say "${step}installing lgsp-bus$([ -n "$extra" ] && echo " with its $extra tools") and its dependencies (pyproject.toml) into $VENV"
    _pip -e "$ROOT/$spec"
    touch "$stamp"
    _say "ready after $((SECONDS - started)) s"
  fi
}
