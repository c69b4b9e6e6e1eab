//! The vocabulary subset a synthetic site ships: real OMOP standard concept ids for everything with an
//! international code, and documented local concepts (ids above 2,000,000,000, the OMOP convention for
//! site-specific concepts) for Korean programme categories that have no standard concept.

/// Concept ids used by the generator. Names follow the OMOP vocabulary.
pub mod c {
    pub const MALE: i64 = 8507;
    pub const FEMALE: i64 = 8532;
    pub const ASIAN: i64 = 8515;
    pub const NOT_HISPANIC: i64 = 38003564;
    pub const INPATIENT: i64 = 9201;
    pub const OUTPATIENT: i64 = 9202;
    pub const ER: i64 = 9203;
    pub const EHR: i64 = 32817;
    pub const CLAIM: i64 = 32810;
    pub const PERIOD_EHR: i64 = 44814724;
    pub const ERA_ALGORITHM: i64 = 32880;
    // Conditions (SNOMED).
    pub const HYPERTENSIVE_DISORDER: i64 = 316866;
    pub const ESSENTIAL_HYPERTENSION: i64 = 320128;
    pub const DIABETES_MELLITUS: i64 = 201820;
    pub const T2DM: i64 = 201826;
    pub const T2DM_NO_COMPLICATION: i64 = 4193704;
    pub const HYPERLIPIDEMIA: i64 = 432867;
    pub const HYPERCHOLESTEROLEMIA: i64 = 437827;
    pub const ISCHEMIC_HEART_DISEASE: i64 = 4185932;
    pub const MYOCARDIAL_INFARCTION: i64 = 4329847;
    pub const ACUTE_MI: i64 = 312327;
    pub const CORONARY_ARTERIOSCLEROSIS: i64 = 317576;
    pub const CEREBROVASCULAR_DISEASE: i64 = 381591;
    pub const CVA: i64 = 381316;
    pub const CEREBRAL_INFARCTION: i64 = 443454;
    pub const CKD: i64 = 46271022;
    pub const CKD_STAGE3: i64 = 443597;
    pub const COPD: i64 = 255573;
    pub const ASTHMA: i64 = 317009;
    pub const MALIGNANT_NEOPLASM: i64 = 443392;
    pub const STOMACH_CANCER: i64 = 443387;
    pub const COLON_CANCER: i64 = 4180790;
    pub const OSTEOARTHRITIS: i64 = 80180;
    pub const OA_KNEE: i64 = 4079750;
    pub const GI_HEMORRHAGE: i64 = 192671;
    // Syndromes.
    pub const INFLUENZA: i64 = 4266367;
    pub const FEVER: i64 = 437663;
    pub const COUGH: i64 = 254761;
    pub const ACUTE_BRONCHITIS: i64 = 260139;
    pub const PNEUMONIA: i64 = 255848;
    pub const DIARRHEA: i64 = 4145808;
    pub const VOMITING: i64 = 441408;
    pub const CHEST_PAIN: i64 = 77670;
    pub const HEART_FAILURE: i64 = 316139;
    pub const CARDIAC_ARRHYTHMIA: i64 = 44784217;
    // Drugs (RxNorm ingredients) and one ATC class.
    pub const METFORMIN: i64 = 1503297;
    pub const INSULIN_GLARGINE: i64 = 1502905;
    pub const AMLODIPINE: i64 = 1332418;
    pub const LOSARTAN: i64 = 1367500;
    pub const ATORVASTATIN: i64 = 1545958;
    pub const ASPIRIN: i64 = 1112807;
    pub const CLOPIDOGREL: i64 = 1322184;
    pub const ALBUTEROL: i64 = 1154343;
    pub const CELECOXIB: i64 = 1118084;
    pub const DICLOFENAC: i64 = 1124300;
    pub const ACETAMINOPHEN: i64 = 1125315;
    pub const OSELTAMIVIR: i64 = 1799139;
    pub const NSAIDS_ATC: i64 = 21603933;
    // Measurements (LOINC) and units (UCUM).
    pub const BMI: i64 = 3038553;
    pub const SBP: i64 = 3004249;
    pub const DBP: i64 = 3012888;
    pub const GLUCOSE: i64 = 3004501;
    pub const HBA1C: i64 = 3004410;
    pub const LDL: i64 = 3009966;
    pub const EGFR: i64 = 3030354;
    pub const KG_M2: i64 = 9531;
    pub const MMHG: i64 = 8876;
    pub const MG_DL: i64 = 8840;
    pub const MMOL_L: i64 = 8753;
    pub const PERCENT: i64 = 8554;
    pub const ML_MIN_173: i64 = 8795;
    // Observations.
    pub const TOBACCO_SMOKING_STATUS: i64 = 43054909;
    pub const NEVER_SMOKED: i64 = 4144272;
    pub const EX_SMOKER: i64 = 4310250;
    pub const SMOKER: i64 = 4298794;
    // Local concepts (documented in docs/SYNTHETIC_POPULATION.md).
    pub const LOCAL_DISABILITY_REGISTERED: i64 = 2_000_000_001;
    pub const LOCAL_LIVES_ALONE: i64 = 2_000_000_002;
    pub const LOCAL_MEDICAL_AID: i64 = 2_000_000_003;
    pub const LOCAL_NHI: i64 = 2_000_000_004;
    pub const LOCAL_HEAT_ILLNESS: i64 = 2_000_000_010;
    pub const LOCAL_OUTDOOR_WORKER: i64 = 2_000_000_011;
}

/// (concept_id, name, domain, vocabulary, class, standard flag, code)
pub const CONCEPTS: &[(i64, &str, &str, &str, &str, &str, &str)] = &[
    (c::MALE, "MALE", "Gender", "Gender", "Gender", "S", "M"),
    (c::FEMALE, "FEMALE", "Gender", "Gender", "Gender", "S", "F"),
    (c::ASIAN, "Asian", "Race", "Race", "Race", "S", "2"),
    (c::NOT_HISPANIC, "Not Hispanic or Latino", "Ethnicity", "Ethnicity", "Ethnicity", "S", "Not Hispanic"),
    (c::INPATIENT, "Inpatient Visit", "Visit", "Visit", "Visit", "S", "IP"),
    (c::OUTPATIENT, "Outpatient Visit", "Visit", "Visit", "Visit", "S", "OP"),
    (c::ER, "Emergency Room Visit", "Visit", "Visit", "Visit", "S", "ER"),
    (c::EHR, "EHR", "Type Concept", "Type Concept", "Type Concept", "S", "OMOP4976890"),
    (c::CLAIM, "Claim", "Type Concept", "Type Concept", "Type Concept", "S", "OMOP4976883"),
    (c::PERIOD_EHR, "Period covering healthcare encounters", "Type Concept", "Obs Period Type", "Obs Period Type", "S", "OMOP4822259"),
    (c::ERA_ALGORITHM, "Standard algorithm", "Type Concept", "Type Concept", "Type Concept", "S", "OMOP4976880"),
    (c::HYPERTENSIVE_DISORDER, "Hypertensive disorder", "Condition", "SNOMED", "Clinical Finding", "S", "38341003"),
    (c::ESSENTIAL_HYPERTENSION, "Essential hypertension", "Condition", "SNOMED", "Clinical Finding", "S", "59621000"),
    (c::DIABETES_MELLITUS, "Diabetes mellitus", "Condition", "SNOMED", "Clinical Finding", "S", "73211009"),
    (c::T2DM, "Type 2 diabetes mellitus", "Condition", "SNOMED", "Clinical Finding", "S", "44054006"),
    (c::T2DM_NO_COMPLICATION, "Type 2 diabetes mellitus without complication", "Condition", "SNOMED", "Clinical Finding", "S", "313436004"),
    (c::HYPERLIPIDEMIA, "Hyperlipidemia", "Condition", "SNOMED", "Clinical Finding", "S", "55822004"),
    (c::HYPERCHOLESTEROLEMIA, "Hypercholesterolemia", "Condition", "SNOMED", "Clinical Finding", "S", "13644009"),
    (c::ISCHEMIC_HEART_DISEASE, "Ischemic heart disease", "Condition", "SNOMED", "Clinical Finding", "S", "414545008"),
    (c::MYOCARDIAL_INFARCTION, "Myocardial infarction", "Condition", "SNOMED", "Clinical Finding", "S", "22298006"),
    (c::ACUTE_MI, "Acute myocardial infarction", "Condition", "SNOMED", "Clinical Finding", "S", "57054005"),
    (c::CORONARY_ARTERIOSCLEROSIS, "Coronary arteriosclerosis", "Condition", "SNOMED", "Clinical Finding", "S", "53741008"),
    (c::CEREBROVASCULAR_DISEASE, "Cerebrovascular disease", "Condition", "SNOMED", "Clinical Finding", "S", "62914000"),
    (c::CVA, "Cerebrovascular accident", "Condition", "SNOMED", "Clinical Finding", "S", "230690007"),
    (c::CEREBRAL_INFARCTION, "Cerebral infarction", "Condition", "SNOMED", "Clinical Finding", "S", "432504007"),
    (c::CKD, "Chronic kidney disease", "Condition", "SNOMED", "Clinical Finding", "S", "709044004"),
    (c::CKD_STAGE3, "Chronic kidney disease stage 3", "Condition", "SNOMED", "Clinical Finding", "S", "433144002"),
    (c::COPD, "Chronic obstructive lung disease", "Condition", "SNOMED", "Clinical Finding", "S", "13645005"),
    (c::ASTHMA, "Asthma", "Condition", "SNOMED", "Clinical Finding", "S", "195967001"),
    (c::MALIGNANT_NEOPLASM, "Malignant neoplastic disease", "Condition", "SNOMED", "Clinical Finding", "S", "363346000"),
    (c::STOMACH_CANCER, "Malignant tumor of stomach", "Condition", "SNOMED", "Clinical Finding", "S", "363349007"),
    (c::COLON_CANCER, "Malignant tumor of colon", "Condition", "SNOMED", "Clinical Finding", "S", "363406005"),
    (c::OSTEOARTHRITIS, "Osteoarthritis", "Condition", "SNOMED", "Clinical Finding", "S", "396275006"),
    (c::OA_KNEE, "Osteoarthritis of knee", "Condition", "SNOMED", "Clinical Finding", "S", "239873007"),
    (c::GI_HEMORRHAGE, "Gastrointestinal hemorrhage", "Condition", "SNOMED", "Clinical Finding", "S", "74474003"),
    (c::INFLUENZA, "Influenza", "Condition", "SNOMED", "Clinical Finding", "S", "6142004"),
    (c::FEVER, "Fever", "Condition", "SNOMED", "Clinical Finding", "S", "386661006"),
    (c::COUGH, "Cough", "Condition", "SNOMED", "Clinical Finding", "S", "49727002"),
    (c::ACUTE_BRONCHITIS, "Acute bronchitis", "Condition", "SNOMED", "Clinical Finding", "S", "10509002"),
    (c::PNEUMONIA, "Pneumonia", "Condition", "SNOMED", "Clinical Finding", "S", "233604007"),
    (c::DIARRHEA, "Diarrhea symptom", "Condition", "SNOMED", "Clinical Finding", "S", "267060006"),
    (c::VOMITING, "Vomiting", "Condition", "SNOMED", "Clinical Finding", "S", "422400008"),
    (c::CHEST_PAIN, "Chest pain", "Condition", "SNOMED", "Clinical Finding", "S", "29857009"),
    (c::HEART_FAILURE, "Heart failure", "Condition", "SNOMED", "Clinical Finding", "S", "84114007"),
    (c::CARDIAC_ARRHYTHMIA, "Cardiac arrhythmia", "Condition", "SNOMED", "Clinical Finding", "S", "698247007"),
    (c::METFORMIN, "metformin", "Drug", "RxNorm", "Ingredient", "S", "6809"),
    (c::INSULIN_GLARGINE, "insulin glargine", "Drug", "RxNorm", "Ingredient", "S", "274783"),
    (c::AMLODIPINE, "amlodipine", "Drug", "RxNorm", "Ingredient", "S", "17767"),
    (c::LOSARTAN, "losartan", "Drug", "RxNorm", "Ingredient", "S", "52175"),
    (c::ATORVASTATIN, "atorvastatin", "Drug", "RxNorm", "Ingredient", "S", "83367"),
    (c::ASPIRIN, "Aspirin", "Drug", "RxNorm", "Ingredient", "S", "1191"),
    (c::CLOPIDOGREL, "clopidogrel", "Drug", "RxNorm", "Ingredient", "S", "32968"),
    (c::ALBUTEROL, "Albuterol", "Drug", "RxNorm", "Ingredient", "S", "435"),
    (c::CELECOXIB, "celecoxib", "Drug", "RxNorm", "Ingredient", "S", "140587"),
    (c::DICLOFENAC, "Diclofenac", "Drug", "RxNorm", "Ingredient", "S", "3355"),
    (c::ACETAMINOPHEN, "Acetaminophen", "Drug", "RxNorm", "Ingredient", "S", "161"),
    (c::OSELTAMIVIR, "oseltamivir", "Drug", "RxNorm", "Ingredient", "S", "260101"),
    (c::NSAIDS_ATC, "ANTIINFLAMMATORY AND ANTIRHEUMATIC PRODUCTS, NON-STEROIDS", "Drug", "ATC", "ATC 3rd", "C", "M01A"),
    (c::BMI, "Body mass index (BMI) [Ratio]", "Measurement", "LOINC", "Clinical Observation", "S", "39156-5"),
    (c::SBP, "Systolic blood pressure", "Measurement", "LOINC", "Clinical Observation", "S", "8480-6"),
    (c::DBP, "Diastolic blood pressure", "Measurement", "LOINC", "Clinical Observation", "S", "8462-4"),
    (c::GLUCOSE, "Glucose [Mass/volume] in Serum or Plasma", "Measurement", "LOINC", "Lab Test", "S", "2345-7"),
    (c::HBA1C, "Hemoglobin A1c/Hemoglobin.total in Blood", "Measurement", "LOINC", "Lab Test", "S", "4548-4"),
    (c::LDL, "Cholesterol in LDL [Mass/volume] in Serum or Plasma by Direct assay", "Measurement", "LOINC", "Lab Test", "S", "18262-6"),
    (c::EGFR, "Glomerular filtration rate/1.73 sq M.predicted [Volume Rate/Area] in Serum or Plasma by Creatinine-based formula (MDRD)", "Measurement", "LOINC", "Lab Test", "S", "33914-3"),
    (c::KG_M2, "kilogram per square meter", "Unit", "UCUM", "Unit", "S", "kg/m2"),
    (c::MMHG, "millimeter mercury column", "Unit", "UCUM", "Unit", "S", "mm[Hg]"),
    (c::MG_DL, "milligram per deciliter", "Unit", "UCUM", "Unit", "S", "mg/dL"),
    (c::MMOL_L, "millimole per liter", "Unit", "UCUM", "Unit", "S", "mmol/L"),
    (c::PERCENT, "percent", "Unit", "UCUM", "Unit", "S", "%"),
    (c::ML_MIN_173, "milliliter per minute per 1.73 square meter", "Unit", "UCUM", "Unit", "S", "mL/min/{1.73_m2}"),
    (c::TOBACCO_SMOKING_STATUS, "Tobacco smoking status", "Observation", "LOINC", "Clinical Observation", "S", "72166-2"),
    (c::NEVER_SMOKED, "Never smoked tobacco", "Observation", "SNOMED", "Clinical Finding", "S", "266919005"),
    (c::EX_SMOKER, "Ex-smoker", "Observation", "SNOMED", "Clinical Finding", "S", "8517006"),
    (c::SMOKER, "Smoker", "Observation", "SNOMED", "Clinical Finding", "S", "77176002"),
    (c::LOCAL_DISABILITY_REGISTERED, "Registered person with disability (Korean disability registry)", "Observation", "MEDFED", "Local", "", "KR-DISABILITY"),
    (c::LOCAL_LIVES_ALONE, "Lives alone (household register)", "Observation", "MEDFED", "Local", "", "KR-LIVES-ALONE"),
    (c::LOCAL_MEDICAL_AID, "Medical Aid (Korean public assistance health coverage)", "Payer", "MEDFED", "Local", "", "KR-MEDICAL-AID"),
    (c::LOCAL_NHI, "National Health Insurance (Korea)", "Payer", "MEDFED", "Local", "", "KR-NHI"),
    (c::LOCAL_HEAT_ILLNESS, "Heat-related illness (KCD T67, KDCA heat illness surveillance)", "Condition", "MEDFED", "Local", "", "KR-T67"),
    (c::LOCAL_OUTDOOR_WORKER, "Outdoor worker (occupation)", "Observation", "MEDFED", "Local", "", "KR-OUTDOOR-WORK"),
];

/// (ancestor, descendant, levels) for non-trivial hierarchy; every concept is also its own ancestor at 0.
pub const ANCESTRY: &[(i64, i64, i64)] = &[
    (c::HYPERTENSIVE_DISORDER, c::ESSENTIAL_HYPERTENSION, 1),
    (c::DIABETES_MELLITUS, c::T2DM, 1),
    (c::DIABETES_MELLITUS, c::T2DM_NO_COMPLICATION, 2),
    (c::T2DM, c::T2DM_NO_COMPLICATION, 1),
    (c::HYPERLIPIDEMIA, c::HYPERCHOLESTEROLEMIA, 1),
    (c::ISCHEMIC_HEART_DISEASE, c::MYOCARDIAL_INFARCTION, 1),
    (c::ISCHEMIC_HEART_DISEASE, c::ACUTE_MI, 2),
    (c::MYOCARDIAL_INFARCTION, c::ACUTE_MI, 1),
    (c::ISCHEMIC_HEART_DISEASE, c::CORONARY_ARTERIOSCLEROSIS, 1),
    (c::CEREBROVASCULAR_DISEASE, c::CVA, 1),
    (c::CEREBROVASCULAR_DISEASE, c::CEREBRAL_INFARCTION, 2),
    (c::CVA, c::CEREBRAL_INFARCTION, 1),
    (c::CKD, c::CKD_STAGE3, 1),
    (c::MALIGNANT_NEOPLASM, c::STOMACH_CANCER, 1),
    (c::MALIGNANT_NEOPLASM, c::COLON_CANCER, 1),
    (c::OSTEOARTHRITIS, c::OA_KNEE, 1),
    (c::NSAIDS_ATC, c::CELECOXIB, 1),
    (c::NSAIDS_ATC, c::DICLOFENAC, 1),
];

/// All `concept_ancestor` rows, including the reflexive ones for standard concepts.
pub fn ancestor_rows() -> Vec<(i64, i64, i64)> {
    let mut rows: Vec<(i64, i64, i64)> = CONCEPTS
        .iter()
        .filter(|c| c.5 == "S" || c.5 == "C")
        .map(|c| (c.0, c.0, 0))
        .collect();
    rows.extend_from_slice(ANCESTRY);
    rows.sort();
    rows
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn concepts_are_unique_and_hierarchy_is_closed() {
        let ids: HashSet<i64> = CONCEPTS.iter().map(|c| c.0).collect();
        assert_eq!(ids.len(), CONCEPTS.len(), "duplicate concept id");
        for (a, d, _) in ANCESTRY {
            assert!(ids.contains(a) && ids.contains(d));
        }
        assert!(CONCEPTS
            .iter()
            .filter(|c| c.3 == "MEDFED")
            .all(|c| c.0 > 2_000_000_000));
    }
}
