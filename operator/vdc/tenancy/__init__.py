"""Tenancy: which namespace may use what (access), and how much (quota). Pure decisions in
``access`` and ``quota``; ``view`` reads them off the operator's object caches."""
