import type { CopyState } from './types.js';

/** The copy life cycle of DESIGN.md; every state change in the store goes through this table. */
const NEXT: Readonly<Record<CopyState, readonly CopyState[]>> = {
  making: ['ready', 'failed'],
  ready: ['mapped', 'releasing', 'failed'],
  mapped: ['releasing', 'failed'],
  releasing: ['gone', 'failed'],
  gone: [],
  failed: ['gone'],
};

export function canMove(from: CopyState, to: CopyState): boolean {
  return NEXT[from].includes(to);
}

/** States whose volume should exist on disk. */
export function holdsVolume(state: CopyState): boolean {
  return state === 'making' || state === 'ready' || state === 'mapped' || state === 'releasing';
}
