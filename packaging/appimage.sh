#!/bin/sh
# Turn the one-folder bundle into an AppDir, and into an AppImage when appimagetool is at hand.
#
#     make package && packaging/appimage.sh     # build/QuantDesk.AppDir [+ dist/QuantDesk-ARCH.AppImage]
#
# The AppDir runs as is (build/QuantDesk.AppDir/AppRun). appimagetool (with its runtime) is not on
# PyPI or in Debian; get it from https://github.com/AppImage/appimagetool/releases and put it on
# PATH, or set APPIMAGETOOL=/path/to/appimagetool-x86_64.AppImage.
set -eu
SRC=${1:-dist/QuantDesk}
OUT=build/QuantDesk.AppDir
ARCH=$(uname -m)
[ -x "$SRC/QuantDesk" ] || { echo "$SRC/QuantDesk not found: run 'make package' first" >&2; exit 2; }
RES=$SRC/_internal/resources

rm -rf "$OUT"
mkdir -p "$OUT/usr/lib" "$OUT/usr/share/applications"
cp -a "$SRC" "$OUT/usr/lib/QuantDesk"
cp -a "$RES/icons" "$OUT/usr/share/icons"
cp "$RES/icons/hicolor/256x256/apps/quantdesk.png" "$OUT/quantdesk.png"
ln -s quantdesk.png "$OUT/.DirIcon"
sed -e "s|^Exec=.*|Exec=QuantDesk|" -e "/^TryExec=/d" "$RES/quantdesk.desktop" > "$OUT/quantdesk.desktop"
cp "$OUT/quantdesk.desktop" "$OUT/usr/share/applications/quantdesk.desktop"
cat > "$OUT/AppRun" <<'RUN'
#!/bin/sh
HERE=$(dirname "$(readlink -f "$0")")
exec "$HERE/usr/lib/QuantDesk/QuantDesk" "$@"
RUN
chmod +x "$OUT/AppRun"
echo "AppDir: $OUT"

TOOL=${APPIMAGETOOL:-$(command -v appimagetool || true)}
if [ -z "$TOOL" ]; then
    echo "appimagetool not found: the AppDir is ready; see the comment at the top of $0 for the AppImage"
    exit 0
fi
ARCH=$ARCH "$TOOL" --no-appstream "$OUT" "dist/QuantDesk-$ARCH.AppImage"
echo "AppImage: dist/QuantDesk-$ARCH.AppImage"
