// Small TypeBox helpers shared by the protocol modules.
import { Type, type TLiteral, type TSchema, type TUnion } from '@sinclair/typebox'

export const Nullable = <T extends TSchema>(s: T) => Type.Union([s, Type.Null()])

/** A union of string literals, typed as the literal union. */
export const Literals = <const T extends string>(...values: T[]) =>
  Type.Union(values.map((v) => Type.Literal(v))) as unknown as TUnion<Array<TLiteral<T>>>
