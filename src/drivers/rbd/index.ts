/** The Ceph RBD driver: images and copies as RBD images in one pool, copies as clones. */
export { RbdDriver, type RbdDriverOptions } from './rbd-driver.js';
export { RbdDevice } from './rbd-device.js';
