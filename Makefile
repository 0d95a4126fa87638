# The two commands a new user runs (see README.md). Both set up everything themselves.
.PHONY: demo test build bench
demo:
	bash hack/demo.sh $(ARGS)
test:
	bash hack/test.sh
build:
	bash -c 'source hack/setup.sh && tsc -b'
bench:
	bash hack/bench.sh
