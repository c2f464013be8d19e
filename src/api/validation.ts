/**
 * Request validation. A body is JSON and must have exactly the types its schema says: a number
 * where a string is due, a list where one value is due, a null where a number is due, unknown
 * fields — each is refused (400) and nothing changes. Query strings and path parameters are text
 * by nature, so there (and only there) "5" may stand for 5.
 */
import { Ajv } from 'ajv';
import type { FastifyInstance } from 'fastify';

export function installValidation(app: FastifyInstance): void {
  // strict: false because TypeBox and OpenAPI add keywords (description, summary) ajv does not know.
  const body = new Ajv({ coerceTypes: false, removeAdditional: false, useDefaults: true, strict: false, allErrors: false });
  const text = new Ajv({ coerceTypes: 'array', removeAdditional: false, useDefaults: true, strict: false, allErrors: false });
  app.setValidatorCompiler(({ schema, httpPart }) => (httpPart === 'body' ? body : text).compile(schema));
}
