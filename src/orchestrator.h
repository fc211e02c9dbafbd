/*-------------------------------------------------------------------------
 *
 * orchestrator.h
 *	  Declarations shared by the orchestrator extension's subsystems.
 *
 *-------------------------------------------------------------------------
 */
#ifndef ORCHESTRATOR_H
#define ORCHESTRATOR_H

#include "utils/jsonb.h"

/* settings (orchestrator.c) */
extern char *orch_database;
extern int	orch_max_workers;
extern bool orch_enabled;
extern bool orch_preloaded;

/* operator specs (operator.c) */
extern void operator_validate(Jsonb *spec, const char *task_id);
extern char *operator_input_task(Jsonb *spec);
extern const char *operator_name(Jsonb *spec);
extern bool operator_produces_artifact(const char *name);

/* Jsonb helpers (operator.c) */
extern JsonbValue *jsonb_get_key(Jsonb *obj, const char *key);

/* definitions (dag.c) */
#define ORCH_MAX_ID_LEN 250
extern void orch_check_id(const char *id, const char *kind);

#endif							/* ORCHESTRATOR_H */
