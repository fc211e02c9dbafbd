# orchestrator: PGXS build
EXTENSION = orchestrator
MODULE_big = orchestrator
OBJS = src/orchestrator.o src/cron.o src/template.o src/operator.o src/dag.o \
	src/scheduler.o src/worker.o src/runs.o src/op_sql.o src/op_data.o \
	src/stream.o src/http.o src/gunzip.o src/artifact.o src/copy.o src/copy_skip.o \
	src/pictures.o src/tasklog.o src/events.o src/sandbox.o src/progress.o src/callback.o src/launcher.o \
	src/registry.o src/dbhooks.o \
	src/rules.o src/state.o src/mapping.o src/owners.o src/pool.o src/sensor.o src/assets.o
SHLIB_LINK = -lcurl -lz
DATA = sql/orchestrator--0.1.sql sql/orchestrator--0.1--0.2.sql
PGFILEDESC = "orchestrator - data pipelines inside PostgreSQL"

PG_CPPFLAGS = -I$(srcdir)/src
PG_CFLAGS = -Werror=implicit-function-declaration

# pg_regress suites (sql/NAME.sql, expected/NAME.out), run against a server
# started with the library preloaded: see test/run.sh
REGRESS = install cron template definitions validation security runs pictures fuzz

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# every object depends on the project's headers (PGXS tracks no dependencies)
$(OBJS): $(wildcard $(srcdir)/src/*.h)

.PHONY: test
test:
	bash test/run.sh

.PHONY: demo demo-stop
demo:
	bash demo/demo.sh

demo-stop:
	bash demo/stop.sh

# the pure decisions (src/rules.c), tested on their own, without a server
.PHONY: unit
unit: test/unit/rules_test
	test/unit/rules_test

test/unit/rules_test: test/unit/rules_test.c src/rules.c src/rules.h
	$(CC) $(CFLAGS) $(CPPFLAGS) -I$(srcdir)/src -o $@ test/unit/rules_test.c src/rules.c \
		-L$(pkglibdir) -lpgport
