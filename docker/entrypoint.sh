#!/bin/sh
# The config every massive-fetcher container runs with, unless MASSIVE_FETCHER_CONFIG names
# one: the user's config.yaml, else their MarketStore mkts.yml (compose mounts the checkout,
# or MASSIVE_FETCHER_CONFIG_DIR, at $LOCAL_CONFIG_DIR), else the one compose bundles.
# A file that is there but unreadable is still chosen, so its error is shown rather than
# another config silently used.
set -eu
if [ -z "${MASSIVE_FETCHER_CONFIG:-}" ]; then
    for candidate in "${LOCAL_CONFIG_DIR:-/etc/massive-fetcher/local}/config.yaml" \
                     "${LOCAL_CONFIG_DIR:-/etc/massive-fetcher/local}/mkts.yml" \
                     "${BUNDLED_CONFIG:-/etc/massive-fetcher/config.yaml}"; do
        if [ -e "$candidate" ]; then
            MASSIVE_FETCHER_CONFIG=$candidate
            export MASSIVE_FETCHER_CONFIG
            break
        fi
    done
fi
exec "$@"
