#!/usr/bin/env bash
# Refresh the console's vendored browser assets from the npm registry (never at install
# time: the files are committed). Usage: scripts/update_vendor.sh [socketio_version] [swagger_version]
# Writes app/console/static/vendor/ and records versions, licences and checksums in VENDOR.md.
set -euo pipefail
cd "$(dirname "$0")/.."
SIO="${1:-4.8.4}"
SWAGGER="${2:-5.35.0}"
DEST=app/console/static/vendor
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
(cd "$TMP" && npm pack --silent "socket.io-client@$SIO" "swagger-ui-dist@$SWAGGER" >/dev/null)
mkdir -p "$TMP/sio" "$TMP/swagger" "$DEST/swagger-ui"
tar -xzf "$TMP"/socket.io-client-"$SIO".tgz -C "$TMP/sio"
tar -xzf "$TMP"/swagger-ui-dist-"$SWAGGER".tgz -C "$TMP/swagger"
cp "$TMP/sio/package/dist/socket.io.min.js" "$DEST/socket.io.min.js"
cp "$TMP/sio/package/LICENSE" "$DEST/socket.io-client.LICENSE"
for f in swagger-ui-bundle.js swagger-ui.css favicon-32x32.png; do
  cp "$TMP/swagger/package/$f" "$DEST/swagger-ui/$f"
done
cp "$TMP/swagger/package/LICENSE" "$DEST/swagger-ui/LICENSE"
[ -f "$TMP/swagger/package/NOTICE" ] && cp "$TMP/swagger/package/NOTICE" "$DEST/swagger-ui/NOTICE"
sha() { sha256sum "$1" | cut -d' ' -f1; }
cat > "$DEST/VENDOR.md" <<MD
# Vendored browser assets

Committed so that installing Episode Control needs no build step and no network. Made by
\`scripts/update_vendor.sh $SIO $SWAGGER\` (npm pack from the npm registry into a temp dir,
then the dist files copied here); run it again with other versions to update.

| file | package | version | licence | sha256 |
|---|---|---|---|---|
| socket.io.min.js | socket.io-client (dist/socket.io.min.js) | $SIO | MIT | $(sha "$DEST/socket.io.min.js") |
| swagger-ui/swagger-ui-bundle.js | swagger-ui-dist | $SWAGGER | Apache-2.0 | $(sha "$DEST/swagger-ui/swagger-ui-bundle.js") |
| swagger-ui/swagger-ui.css | swagger-ui-dist | $SWAGGER | Apache-2.0 | $(sha "$DEST/swagger-ui/swagger-ui.css") |
| swagger-ui/favicon-32x32.png | swagger-ui-dist | $SWAGGER | Apache-2.0 | $(sha "$DEST/swagger-ui/favicon-32x32.png") |

Licence texts: \`socket.io-client.LICENSE\`, \`swagger-ui/LICENSE\`. No chart or UI library:
the console's charts are inline SVG drawn by \`js/charts.js\`.
MD
echo "vendored socket.io-client $SIO and swagger-ui-dist $SWAGGER into $DEST"
