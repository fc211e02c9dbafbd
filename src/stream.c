/*-------------------------------------------------------------------------
 *
 * stream.c
 *	  The stream framework: reading, lookahead, progress.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"

#include "orchestrator.h"
#include "stream.h"

Stream *
stream_new(const char *name, stream_read_fn read, Stream *input, void *state)
{
	Stream	   *stream = palloc0(sizeof(Stream));

	stream->name = name;
	stream->read = read;
	stream->input = input;
	stream->state = state;
	return stream;
}

size_t
stream_read(Stream *stream, char *buf, size_t len)
{
	size_t		n;

	CHECK_FOR_INTERRUPTS();
	if (stream->peek_pos < stream->peek_len)
	{
		n = Min(len, stream->peek_len - stream->peek_pos);
		memcpy(buf, stream->peek_buf + stream->peek_pos, n);
		stream->peek_pos += n;
		return n;
	}
	n = stream->read(stream, buf, len);
	stream->bytes += n;
	return n;
}

/*
 * Makes up to "want" bytes of what comes next available without consuming
 * them; returns how many there are (fewer only at the end of the data).
 */
size_t
stream_peek(Stream *stream, const char **data, size_t want)
{
	if (stream->peek_buf == NULL || stream->peek_pos > 0)
	{
		/* keep what is not consumed yet, at the start of a buffer of "want" */
		char	   *buf = palloc(want);
		size_t		keep = stream->peek_len - stream->peek_pos;

		Assert(keep <= want);
		if (keep > 0)
			memcpy(buf, stream->peek_buf + stream->peek_pos, keep);
		if (stream->peek_buf)
			pfree(stream->peek_buf);
		stream->peek_buf = buf;
		stream->peek_len = keep;
		stream->peek_pos = 0;
	}
	else if (want > stream->peek_len)
		stream->peek_buf = repalloc(stream->peek_buf, want);

	while (stream->peek_len < want)
	{
		size_t		n = stream->read(stream, stream->peek_buf + stream->peek_len,
									 want - stream->peek_len);

		if (n == 0)
			break;
		stream->bytes += n;
		stream->peek_len += n;
	}
	*data = stream->peek_buf;
	return Min(want, stream->peek_len);
}

/* what a source has read, for the progress view */
void
stream_count_input(uint64 bytes)
{
	orch_progress_add_bytes(bytes);
}
