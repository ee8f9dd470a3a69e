# Thin wrappers over scripts/: the scripts are the source of truth (CI runs .ci/run -> scripts/test.sh).
.PHONY: test bootstrap lint demo

# make test ARGS="tests/unit -x"
test:
	bash scripts/test.sh $(ARGS)

bootstrap:
	bash scripts/bootstrap.sh

lint: bootstrap
	.venv/bin/ruff check .
	.venv/bin/mypy s3ddb loader lambda_src

demo: bootstrap
	bash scripts/demo.sh
