/*-------------------------------------------------------------------------
 *
 * template.h
 *	  Airflow-style templates ("{{ ds }}") in task arguments.
 *
 *-------------------------------------------------------------------------
 */
#ifndef ORCHESTRATOR_TEMPLATE_H
#define ORCHESTRATOR_TEMPLATE_H

#include "datatype/timestamp.h"
#include "nodes/pg_list.h"
#include "utils/jsonb.h"

/* What a template can refer to when it is rendered. */
typedef struct TemplateContext
{
	TimestampTz logical_date;
	TimestampTz data_interval_start;
	TimestampTz data_interval_end;
	const char *run_id;			/* NULL if unknown */
	const char *dag_id;			/* NULL if unknown */
	const char *task_id;		/* NULL if unknown */
	const char *error;			/* in callbacks: the error; else NULL */
	Jsonb	   *params;			/* NULL for none */
	bool		mapped;			/* a mapped instance: item and map_index */
	int			map_index;
	Jsonb	   *item;			/* its element */
	Jsonb	   *asset_events;	/* an asset-triggered run's events by asset,
								 * NULL for none */
} TemplateContext;

/*
 * Checks a template's syntax and variable names without rendering it;
 * raises ERROR naming "what" (such as "the url of task \"x\"").
 */
extern void template_validate(const char *tmpl, const char *what);

/* Renders a template. */
extern char *template_render(const char *tmpl, const char *what,
							 const TemplateContext *ctx);

/*
 * Renders a possibly qualified table name: dots and double quotes in the
 * template's literal text separate and quote identifiers as in SQL, and
 * what the template expressions produce is part of one identifier, as if
 * it were quoted.  Returns a list of 1 to 3 C strings.  With ctx NULL, only
 * checks the syntax.
 */
extern List *template_render_name(const char *tmpl, const char *what,
								  const TemplateContext *ctx);

#endif							/* ORCHESTRATOR_TEMPLATE_H */
