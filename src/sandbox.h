/*-------------------------------------------------------------------------
 *
 * sandbox.h
 *	  Running user code (tasks, callbacks) in a background worker that is a
 *	  superuser session, so that it has exactly its owner's rights and
 *	  leaves nothing behind.
 *
 *-------------------------------------------------------------------------
 */
#ifndef ORCHESTRATOR_SANDBOX_H
#define ORCHESTRATOR_SANDBOX_H

typedef struct UserScope
{
	Oid			owner;
	Oid			save_userid;
	int			save_sec_context;
	int			nestlevel;
} UserScope;

/* at process start, before the first statement: pin our own settings */
extern void sandbox_pin_session(void);

/* around user code, inside a transaction */
extern void sandbox_enter(UserScope *scope, Oid owner);
extern void sandbox_leave(UserScope *scope);

/* after each piece of user code, however it ended, inside a transaction */
extern void sandbox_reset_session(void);

#endif							/* ORCHESTRATOR_SANDBOX_H */
