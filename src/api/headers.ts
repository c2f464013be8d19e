/**
 * Request headers of the API that are not HTTP's own. Kept free of imports: the CLI sends them
 * without loading the server.
 */

/** On an upload (PUT /v1/images/:name): the sha256, in hex, of the body as sent. */
export const SHA256_HEADER = 'x-prestage-sha256';
