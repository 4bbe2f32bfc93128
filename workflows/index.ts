// Entry point of the workflow bundle (Worker workflowsPath): every workflow type the workers run.
export { auditWorkflow, classGroupWorkflow, classStageWorkflow } from './audit.js';
