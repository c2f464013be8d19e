import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { errnoCode, isPrestageError, type ErrorCode } from '../domain/index.js';

/** Each domain error code has one HTTP status; this table is the only place that says which. */
export const HTTP_STATUS: Readonly<Record<ErrorCode, number>> = {
  PRESTAGE_INPUT: 400,
  PRESTAGE_NOT_FOUND: 404,
  PRESTAGE_CONFLICT: 409,
  PRESTAGE_BAD_IMAGE: 422,
  PRESTAGE_UNAVAILABLE: 503,
  PRESTAGE_UNAUTHORIZED: 401,
  PRESTAGE_FORBIDDEN: 403,
  PRESTAGE_NO_SPACE: 507,
  PRESTAGE_INTERNAL: 500,
};

export interface ErrorBody {
  error: { code: ErrorCode; message: string; details?: Record<string, unknown> };
}

export function errorBody(code: ErrorCode, message: string, details?: Record<string, unknown>): ErrorBody {
  return { error: { code, message, ...(details && Object.keys(details).length > 0 && { details }) } };
}

/** `answered` is told the code of every error answer (the metrics count them). */
export function installErrorHandling(app: FastifyInstance, answered: (code: ErrorCode) => void = () => undefined): void {
  app.setErrorHandler((err: FastifyError, req, reply) => {
    if (isPrestageError(err)) {
      answered(err.code);
      if (err.code === 'PRESTAGE_UNAUTHORIZED' && !reply.hasHeader('www-authenticate')) void reply.header('www-authenticate', 'Bearer realm="prestage"');
      return reply.status(HTTP_STATUS[err.code]).send(errorBody(err.code, err.message, { ...err.details }));
    }
    if (err.validation) {
      answered('PRESTAGE_INPUT');
      return reply.status(400).send(errorBody('PRESTAGE_INPUT', `invalid request: ${err.message}`));
    }
    if (typeof err.statusCode === 'number' && err.statusCode >= 400 && err.statusCode < 500) {
      answered('PRESTAGE_INPUT');
      return reply.status(err.statusCode).send(errorBody('PRESTAGE_INPUT', err.message));
    }
    if (errnoCode(err) === 'ENOSPC') {
      answered('PRESTAGE_NO_SPACE');
      return reply.status(507).send(errorBody('PRESTAGE_NO_SPACE', 'no space left on the data volume'));
    }
    req.log.error({ err }, 'request failed');
    answered('PRESTAGE_INTERNAL');
    return reply.status(500).send(errorBody('PRESTAGE_INTERNAL', `internal error: ${err.message}`));
  });
  app.setNotFoundHandler((req, reply) => {
    answered('PRESTAGE_NOT_FOUND');
    return reply.status(404).send(errorBody('PRESTAGE_NOT_FOUND', `no route ${req.method} ${req.url}`));
  });
}

/** What the framework refuses before any route runs (a bad percent-encoding in the path): a 400 of the catalogue. */
export function answerFrameworkError(err: FastifyError, _req: FastifyRequest, reply: FastifyReply): void {
  void reply.code(400).send(errorBody('PRESTAGE_INPUT', err.message));
}
