#!/usr/bin/env bash
# Install the OHIF viewer the portal serves at /viewer/: the prebuilt @ohif/app package of
# the version portal/settings.py names (VIEWER_VERSION), from the npm registry, into vendor/.
# Without npm it says how to add the viewer and ends well: the portal runs without it.
# PORTAL_VIEWER_INSTALL=0 skips it.
set -uo pipefail
cd "$(dirname "$0")/.."
[ "${PORTAL_VIEWER_INSTALL:-1}" = "0" ] && exit 0
version="$(sed -n 's/^VIEWER_VERSION = "\(.*\)"$/\1/p' portal/settings.py)"
folder="vendor/ohif-$version"
[ -f "$folder/package/dist/index.html" ] && exit 0
if ! command -v npm >/dev/null; then
  echo "The OHIF viewer is not installed: npm is missing. Install Node.js and npm" \
       "(Debian: apt-get install npm) and run scripts/setup.sh again. The portal runs" \
       "without it." >&2
  exit 0
fi
echo "Installing the OHIF viewer $version from the npm registry (once)..." >&2
mkdir -p "$folder"
if (cd "$folder" && npm pack --silent "@ohif/app@$version" >/dev/null &&
    tar xzf "ohif-app-$version.tgz" && rm -f "ohif-app-$version.tgz"); then
  echo "OHIF viewer installed in $folder" >&2
else
  rm -rf "$folder"
  echo "The OHIF viewer could not be installed (npm pack @ohif/app@$version failed);" \
       "the portal runs without it. Run scripts/setup.sh again to retry." >&2
fi
exit 0
