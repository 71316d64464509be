#!/bin/sh
# Installs the Python client libraries used by psycopg_test.py (idempotent).
set -e
export PIP_ROOT_USER_ACTION=ignore
python3 -c 'import psycopg' 2>/dev/null || python3 -m pip install --quiet 'psycopg[binary]'
