#!/bin/sh
# Installs the Python client libraries of the client tests when missing
# or of another major version (idempotent): psycopg 3 (psycopg_test.py),
# SQLAlchemy 2 and pandas (sqlalchemy_test.py).
set -e
export PIP_ROOT_USER_ACTION=ignore
# A Debian python3 refuses pip installs outside a virtualenv (PEP 668);
# these test libraries go beside its own packages all the same.
export PIP_BREAK_SYSTEM_PACKAGES=1
python3 - 2>/dev/null <<'PY' || python3 -m pip install --quiet 'psycopg[binary]>=3.1,<4' 'sqlalchemy>=2.0,<3' 'pandas>=2.2,<4'
import psycopg, sqlalchemy, pandas
major = lambda m: int(m.__version__.split(".")[0])
assert major(psycopg) == 3 and major(sqlalchemy) == 2 and major(pandas) in (2, 3)
PY
