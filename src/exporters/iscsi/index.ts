/**
 * The iSCSI exporter's public surface. Wiring, for the composition root:
 *
 *   const tgtd = new Tgtd({ runDir, portal: { host, port }, logger });   // runDir: this instance's own
 *   const iscsi = new IscsiExporter({ tgtd, logger });
 *   await iscsi.start();
 *   for (const host of hosts) await iscsi.setHostAuth(host.id, stored credentials);  // newHostAuth() makes them
 *   await iscsi.reconcile(every mapping with its copy);                            // before hosts log in
 *   … export / unexport / sessions …
 *   await iscsi.close();                                                          // stops tgtd
 */
export { IscsiExporter, type IscsiAccess, type IscsiExporterOptions, type IscsiReconcileReport, type IscsiSession } from './iscsi-exporter.js';
export { checkHostAuth, checkIscsiName, DEFAULT_INITIATOR_PREFIX, DEFAULT_TARGET_PREFIX, initiatorNameFor, newChapSecret, newHostAuth, targetNameFor, type ChapAccount, type IscsiHostAuth } from './names.js';
export { Tgtadm, TgtadmError, isTgtadmError, type BackingStoreType, type TgtadmOptions, type TgtadmReason } from './tgtadm.js';
export type { TgtConnection, TgtLun, TgtNexus, TgtSystem, TgtTarget } from './tgtadm-show.js';
export { Tgtd, TGTD_OWNER_ENV, type TgtdOptions, type TgtdStarted, type TgtdState, type TgtdStatus } from './tgtd.js';
