/**
 * The API's schema of a template spec: the body of `POST /v1/templates`, for OpenAPI and for
 * clients. The domain's `validateTemplateSpec` enforces the same shape plus what a schema
 * cannot say (unique paths, declared params), naming every field at fault.
 */
import { Type, type Static } from '@sinclair/typebox';
import { GUID_PATTERN, PARAM_NAME, TEMPLATE_LIMITS, type TemplateSpec } from '../domain/index.js';

const PartitionBody = Type.Union([
  Type.Object({ number: Type.Integer({ minimum: 1, maximum: TEMPLATE_LIMITS.partitionNumber }) }, { additionalProperties: false }),
  Type.Object({ label: Type.String({ minLength: 1, maxLength: TEMPLATE_LIMITS.labelChars }) }, { additionalProperties: false }),
  Type.Object({ guid: Type.String({ pattern: GUID_PATTERN.source }) }, { additionalProperties: false }),
]);
const DocumentBody = Type.String({ maxLength: TEMPLATE_LIMITS.documentChars });
const ImagePath = Type.String({ minLength: 2, maxLength: TEMPLATE_LIMITS.pathBytes, pattern: '^/', description: 'absolute path inside the image' });
const ParamName = Type.String({ pattern: PARAM_NAME.source, maxLength: TEMPLATE_LIMITS.paramNameChars });
const Id = Type.Integer({ minimum: 0, maximum: TEMPLATE_LIMITS.maxId });

/** The normalized template spec the API accepts, i.e. `TemplateSpec` (what `prestage template` sends after reading a spec file). */
export const TemplateSpecBody = Type.Object(
  {
    name: Type.String({ pattern: '^[a-z0-9][a-z0-9._-]{0,62}$' }),
    base: Type.String({ minLength: 1, maxLength: 80, description: 'golden image name (latest version) or name@N (pinned)' }),
    description: Type.Optional(Type.String({ maxLength: TEMPLATE_LIMITS.descriptionChars })),
    partition: Type.Optional(Type.Union([PartitionBody, Type.Literal('whole-disk', { description: 'a disk with no partition table: the filesystem starts at byte 0' })])),
    filesystem: Type.Union([Type.Literal('ext'), Type.Literal('vfat')]),
    rebuild: Type.Union([Type.Literal('auto'), Type.Literal('manual')]),
    params: Type.Record(ParamName, Type.String({ maxLength: TEMPLATE_LIMITS.valueChars }), { additionalProperties: false }),
    files: Type.Array(
      Type.Object(
        {
          path: ImagePath,
          mode: Type.Integer({ minimum: 0, maximum: 0o7777 }),
          uid: Id,
          gid: Id,
          contentBase64: Type.String({ contentEncoding: 'base64' }),
          substitute: Type.Boolean(),
        },
        { additionalProperties: false },
      ),
      { maxItems: TEMPLATE_LIMITS.files },
    ),
    remove: Type.Array(ImagePath, { maxItems: TEMPLATE_LIMITS.remove }),
    seed: Type.Optional(
      Type.Object(
        {
          as: Type.Union([Type.Literal('iso'), Type.Literal('vfat')]),
          partition: PartitionBody,
          userData: Type.Optional(DocumentBody),
          metaData: Type.Optional(DocumentBody),
          networkConfig: Type.Optional(DocumentBody),
        },
        { additionalProperties: false },
      ),
    ),
    perHost: Type.Optional(
      Type.Object(
        {
          params: Type.Record(
            ParamName,
            Type.Object(
              { default: Type.Optional(Type.String({ maxLength: TEMPLATE_LIMITS.valueChars })), description: Type.Optional(Type.String()) },
              { additionalProperties: false },
            ),
            { additionalProperties: false },
          ),
          metaData: Type.Optional(DocumentBody),
          userData: Type.Optional(DocumentBody),
          networkConfig: Type.Optional(DocumentBody),
        },
        { additionalProperties: false },
      ),
    ),
  },
  { additionalProperties: false },
);

/** Fails to compile if the schema and `TemplateSpec` drift apart. */
const _schemaIsTemplateSpec = (body: Static<typeof TemplateSpecBody>): TemplateSpec => body;
