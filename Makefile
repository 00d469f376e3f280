# ctrhost.fleet — the user interface.
#   make setup     prepare this machine (OS packages, CRIU, .venv, collection)
#   make demo      setup, bring the lab up, run the demo playbook on it
#   make test      unit + integration + quality gates (what CI runs)
#   make bench     benchmarks side by side with Podman
#   make lab-up / make lab-down
SHELL := /bin/bash
LAB_HOSTS ?= 3

.PHONY: setup demo test unit integration lint sanity bench lab-up lab-down collection clean

setup:
	@scripts/setup

collection:
	@scripts/install-collection

lab-up: setup
	@scripts/lab up $(LAB_HOSTS)

lab-down:
	@scripts/lab down

demo: setup
	@scripts/lab up $(LAB_HOSTS)
	@scripts/demo

test: setup
	@scripts/test

unit:
	@scripts/test unit

integration:
	@scripts/test integration

lint:
	@scripts/test lint

sanity:
	@scripts/test sanity

bench: setup
	@scripts/bench

clean: lab-down
	rm -rf build collections .pytest_cache
