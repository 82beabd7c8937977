#!/bin/sh
# Install the QuantDesk bundle for the current user (no root): the app in ~/.local/opt/QuantDesk,
# `quantdesk` on PATH, and the .desktop file and icons so it appears in the desktop's app menu.
#
#     packaging/install-linux.sh [BUNDLE_DIR]        # default: dist/QuantDesk (after `make package`)
#     PREFIX=/opt/local packaging/install-linux.sh   # elsewhere
#     packaging/install-linux.sh --uninstall
set -eu
PREFIX=${PREFIX:-$HOME/.local}
APPDIR=$PREFIX/opt/QuantDesk
ICONS=$PREFIX/share/icons/hicolor
DESKTOP=$PREFIX/share/applications/quantdesk.desktop

refresh() {
    command -v update-desktop-database >/dev/null 2>&1 && update-desktop-database -q "$PREFIX/share/applications" || true
    command -v gtk-update-icon-cache >/dev/null 2>&1 && gtk-update-icon-cache -q -t "$ICONS" || true
}

if [ "${1:-}" = "--uninstall" ]; then
    rm -rf "$APPDIR" "$DESKTOP" "$PREFIX/bin/quantdesk" "$ICONS"/*/apps/quantdesk.png "$ICONS/scalable/apps/quantdesk.svg"
    refresh
    echo "QuantDesk removed from $PREFIX (your chats and models stay in ~/.local/share/QuantDesk)"
    exit 0
fi

SRC=${1:-dist/QuantDesk}
[ -x "$SRC/QuantDesk" ] || { echo "$SRC/QuantDesk not found: run 'make package' first" >&2; exit 2; }
RES=$SRC/_internal/resources

mkdir -p "$PREFIX/opt" "$PREFIX/bin" "$PREFIX/share/applications" "$ICONS/scalable/apps"
rm -rf "$APPDIR.new"
cp -a "$SRC" "$APPDIR.new"
rm -rf "$APPDIR"
mv "$APPDIR.new" "$APPDIR"
ln -sf "$APPDIR/QuantDesk" "$PREFIX/bin/quantdesk"
for png in "$RES"/icons/hicolor/*/apps/quantdesk.png; do
    size=$(basename "$(dirname "$(dirname "$png")")")
    mkdir -p "$ICONS/$size/apps"
    cp "$png" "$ICONS/$size/apps/quantdesk.png"
done
cp "$RES/quantdesk.svg" "$ICONS/scalable/apps/quantdesk.svg"
sed -e "s|^Exec=.*|Exec=$APPDIR/QuantDesk|" -e "s|^TryExec=.*|TryExec=$APPDIR/QuantDesk|" \
    "$RES/quantdesk.desktop" > "$DESKTOP"
refresh
echo "QuantDesk installed: $APPDIR (menu entry $DESKTOP, command $PREFIX/bin/quantdesk)"
