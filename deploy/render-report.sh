#!/usr/bin/env bash
# Opens the fleet report in headless Chromium, checks that the browser
# parsed every chart, and takes a screenshot:
#   deploy/render-report.sh [REPORT_HTML] [OUT_PNG]
# Defaults: $E2EB_STATE_DIR/fleet/report.html and the same name as .png.
# Needs Debian's `chromium` (apt-get install -y chromium); `make test` and CI
# do not. The page loads nothing from the network; the flags keep Chromium
# itself from calling home too.
set -euo pipefail

cd "$(dirname "$0")/.."
html=${1:-${E2EB_STATE_DIR:-.state}/fleet/report.html}
png=${2:-${html%.html}.png}

browser=$(command -v chromium || command -v chromium-browser || true)
[[ -n $browser ]] || { echo "chromium not found; on Debian: apt-get install -y chromium" >&2; exit 1; }
[[ -f $html ]] || { echo "$html not found; run device-sim fleet first" >&2; exit 1; }

profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
url="file://$(realpath "$html")"
flags=(--headless --no-sandbox --disable-gpu --disable-quic --no-first-run
  --disable-background-networking --disable-component-update --disable-sync
  --user-data-dir="$profile" --enable-logging=stderr --v=0)

# The DOM as Chromium parsed it must hold every chart of the file.
dom=$(timeout 60 "$browser" "${flags[@]}" --dump-dom "$url" 2>"$profile/dom.log")
expected=$(grep -o '<svg ' "$html" | wc -l)
parsed=$(grep -o '<svg ' <<<"$dom" | wc -l)
if ((parsed == 0 || parsed != expected)); then
  echo "chromium parsed $parsed of $expected charts" >&2
  exit 1
fi
# Page errors would show as console messages; the page has no script, so any is a defect.
if grep -E 'CONSOLE|Uncaught' "$profile/dom.log" >&2; then
  echo "chromium reported page errors (above)" >&2
  exit 1
fi

rm -f "$png"
timeout 60 "$browser" "${flags[@]}" --hide-scrollbars --window-size=1280,2000 \
  --screenshot="$(realpath -m "$png")" "$url" 2>"$profile/shot.log" || true
if [[ ! -s $png ]]; then
  echo "no screenshot written; chromium said:" >&2
  tail -20 "$profile/shot.log" >&2
  exit 1
fi
echo "rendered $html: $parsed charts; screenshot $png ($(stat -c %s "$png") bytes)"
