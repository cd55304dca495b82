# vdc-operator — developer entry points. `make demo` and `make test` do all set-up themselves.
SHELL := /bin/bash
export UV_PYTHON_DOWNLOADS := never
PY := .venv/bin/python
PYTEST := .venv/bin/pytest

.PHONY: bootstrap demo down test test-unit test-integration test-e2e lint crds crds-check bench bench-api-writes bench-migration bench-ha bench-drs bench-churn bench-failover chaos clean

bootstrap:            ## install Debian packages, the Python env, control-plane binaries, the tiny guest
	hack/bootstrap.sh

demo: bootstrap       ## start the local datacenter, the operator and the examples; leave it running
	hack/demo.sh up

down:                 ## stop everything `make demo` started
	hack/demo.sh down

test: bootstrap       ## the whole suite: lint, unit, integration, e2e
	$(MAKE) lint
	$(PYTEST) -m "unit or integration or e2e" tests

test-unit:            ## pure logic only (seconds; needs only `make bootstrap`)
	$(PYTEST) -m unit tests

test-integration:     ## against a real kube-apiserver + etcd
	$(PYTEST) -m integration tests

test-e2e:             ## against the control plane and real libvirt hosts
	$(PYTEST) -m e2e tests

lint:                 ## ruff and mypy
	.venv/bin/ruff check operator tests bench
	.venv/bin/ruff format --check operator tests bench
	.venv/bin/mypy

bench:                ## VM scale benchmark: prints figures next to raw libvirt's (root, after make bootstrap)
	$$(command -v uv || echo "$$HOME/.local/bin/uv") sync --frozen --inexact --quiet --group bench
	$(PY) bench/vm_scale.py

bench-api-writes:     ## CPU per API write through the operator's writer next to the kubernetes client's, on a real control plane (no root, no libvirt; ARGS="--objects 2000 --rounds 3 ...")
	$(PY) bench/api_write_cost.py $(ARGS)

bench-migration:      ## live migration benchmark: VirtualMachineMigration and Host evacuation next to raw migrateToURI3 (root, after make bootstrap; ARGS="--round-trips 5 --vms 6 ...")
	$(PY) bench/migration.py $(ARGS)

bench-ha:             ## HA benchmark: power a host off, time until its VMs run elsewhere (detection, fencing, restart) next to raw define+start (root, after make bootstrap; ARGS="--vms 6 --rounds 3 ...")
	$(PY) bench/ha.py $(ARGS)

bench-drs:            ## DRS/DPM planner benchmark: simulated clusters through the real planner, an OR-Tools CP-SAT reference on the small ones (no root, no rig; ARGS="--seed N --steps 6 --quick ...")
	$$(command -v uv || echo "$$HOME/.local/bin/uv") sync --frozen --inexact --quiet --group bench
	$(PY) bench/drs.py $(ARGS)

bench-churn:          ## VM churn benchmark: creates, runStrategy changes and deletes at R/s on M running VMs; time to converged, backlog, writes and CPU per change (root, after make bootstrap; ARGS="--vms 5000 --hosts 50 --rate 20 --seconds 300 ...")
	$(PY) bench/vm_churn.py $(ARGS)

bench-failover:       ## leader failover benchmark: two --leader-elect replicas with M VMs, SIGKILL then SIGTERM of the leader; takeover, caches primed, resync (root, after make bootstrap; ARGS="--vms 5000 --hosts 50 ...")
	$(PY) bench/failover.py $(ARGS)

chaos:                ## fault-injection benchmark: VM rollout+teardown while the operator, apiserver, etcd, libvirtd, hosts and a pool fail; prints figures and invariant violations (root, after make bootstrap; ARGS="--seed N --vms 200 ...")
	$(PY) bench/chaos.py $(ARGS)

crds:                 ## regenerate crds/ and the chart's copy from the models
	$(PY) -m vdc.cli.main crds

crds-check:
	$(PY) -m vdc.cli.main crds --check

clean: down
	rm -rf .venv .vdc

.PHONY: argocd-health
argocd-health:        ## regenerate the Argo CD health checks (argocd/health/, argocd-cm-health.yaml) from charts/vdc-operator/argocd/health-src/
	$(PY) -m vdc.gitops
